"""A release names, per model, the provider whose key alone may import its data keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _release_kit import ReleaseKit

from protocol.measurement import CONFIG_ARTIFACT, model_artifact_name
from protocol.release import MalformedRelease

MODEL = "smol"
WEIGHTS = b"GGUF" + bytes(64)
PROVIDER = bytes(range(32))


@pytest.fixture
def kit(tmp_path: Path) -> ReleaseKit:
    return ReleaseKit(install_root=tmp_path / "install")


def test_the_provider_key_is_signed_into_the_release_and_read_back(kit: ReleaseKit) -> None:
    files = kit.publish(1, models={MODEL: WEIGHTS}, model_providers={MODEL: PROVIDER})
    release = kit.verified(files)
    assert release.model_provider_static(MODEL) == PROVIDER
    assert release.model_provider_static("other") is None
    # The key is part of what the signers signed: the release digest moves with it.
    other = kit.verified(
        kit.publish(1, models={MODEL: WEIGHTS}, model_providers={MODEL: bytes(32)})
    )
    assert other.release_digest != release.release_digest


def test_a_release_without_providers_names_none(kit: ReleaseKit) -> None:
    release = kit.verified(kit.publish(1, models={MODEL: WEIGHTS}))
    assert release.model_provider_static(MODEL) is None


@pytest.mark.parametrize(
    "providers",
    [{"unlisted": PROVIDER}, {MODEL: PROVIDER[:31]}, {MODEL: "00" * 32}],
)
def test_the_builder_refuses_a_provider_it_cannot_name(
    kit: ReleaseKit, providers: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        kit.publish(1, models={MODEL: WEIGHTS}, model_providers=providers)


def _set_custom(name: str, value: object) -> Callable[[Any], None]:
    def mutate(targets_md: Any) -> None:
        targets_md.signed.targets[name].unrecognized_fields["custom"] = value

    return mutate


@pytest.mark.parametrize(
    ("artifact", "custom"),
    [
        (model_artifact_name(MODEL), {"provider_static": PROVIDER.hex().upper()}),
        (model_artifact_name(MODEL), {"provider_static": PROVIDER.hex()[:-2]}),
        (model_artifact_name(MODEL), {"provider_static": PROVIDER.hex(), "extra": 1}),
        (model_artifact_name(MODEL), {"provider_static": 7}),
        (model_artifact_name(MODEL), "not a mapping"),
        (CONFIG_ARTIFACT, {"provider_static": PROVIDER.hex()}),
    ],
)
def test_signed_fields_mantle_does_not_define_are_refused(
    kit: ReleaseKit, artifact: str, custom: object
) -> None:
    # The kit verifies what it signed (to log it), so the refusal comes from there.
    with pytest.raises(MalformedRelease) as refused:
        kit.publish(1, models={MODEL: WEIGHTS}, mutate=_set_custom(artifact, custom))
    assert PROVIDER.hex() not in str(refused.value).lower()
