"""The node image and the release floor in release metadata.

Both travel in the signed targets: the image's reference PCRs in the ``custom``
field of the ``image/pcr-measurements.json`` entry, the floor as ``min_version``
in ``signed``. Each is covered by the signatures and by the release digest the
log commits to, and parsed strictly.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.serialization.json import CanonicalJSONSerializer

from protocol.measurement import (
    IMAGE_MEASUREMENTS_ARTIFACT,
    PLATFORM_PCRS,
    ImageMeasurementsError,
    MeasurementError,
    encode_image_measurements,
    image_measurements_object,
    parse_image_measurements,
)
from protocol.release import (
    ArtifactSpec,
    BadSignature,
    MalformedRelease,
    add_signer,
    metadata_to_bytes,
    new_root,
    new_targets,
    release_log_entry,
    sign_metadata,
    verify_release_metadata,
)

NOW = datetime(2030, 6, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
PCRS = {index: hashlib.sha384(b"pcr %d" % index).digest() for index in PLATFORM_PCRS}
IMAGE = encode_image_measurements(PCRS)
CONFIG = {"config/cluster.json": ArtifactSpec(2, {"sha384": hashlib.sha384(b"{}").digest()})}
SIGNER = CryptoSigner.generate_ed25519()


def _root() -> bytes:
    root = new_root(expires=LATER, targets_threshold=1)
    add_signer(root, SIGNER.public_key, "root")
    add_signer(root, SIGNER.public_key, "targets")
    sign_metadata(root, SIGNER)
    return metadata_to_bytes(root)


ROOT = _root()


def _targets(**changes: Any) -> Any:
    arguments: dict[str, Any] = {
        "version": 4,
        "expires": LATER,
        "artifacts": CONFIG,
        "min_version": 3,
        "image_measurements": IMAGE,
    }
    arguments.update(changes)
    return new_targets(**arguments)


def _signed(md: Any) -> bytes:
    sign_metadata(md, SIGNER)
    return metadata_to_bytes(md)


def _verify(targets: bytes) -> Any:
    return verify_release_metadata(ROOT, targets, trusted_root=ROOT, now=NOW, min_version=0)


# --- the nitro-tpm-pcr-compute file -----------------------------------------------------


def test_image_file_round_trips_in_the_tools_format() -> None:
    document = json.loads(IMAGE)
    assert list(document) == ["Measurements"]
    assert list(document["Measurements"]) == ["HashAlgorithm", "PCR4", "PCR7", "PCR12"]
    assert document["Measurements"]["HashAlgorithm"] == "SHA384"
    assert dict(parse_image_measurements(IMAGE)) == PCRS
    # Upper-case hex, as another tool version might print it, means the same.
    upper = json.dumps(
        {
            "Measurements": {
                "HashAlgorithm": "SHA384",
                **{f"PCR{i}": v.hex().upper() for i, v in PCRS.items()},
            }
        }
    ).encode()
    assert dict(parse_image_measurements(upper)) == PCRS


def _with(**fields: object) -> bytes:
    measurements: dict[str, object] = dict(image_measurements_object(PCRS)["Measurements"])
    for key, value in fields.items():
        if value is None:
            del measurements[key]
        else:
            measurements[key] = value
    return json.dumps({"Measurements": measurements}).encode()


@pytest.mark.parametrize(
    "data",
    [
        _with(HashAlgorithm="SHA256"),
        _with(HashAlgorithm="sha384"),
        _with(PCR7=None),
        _with(PCR0="00" * 48),
        _with(PCR4="00" * 47),
        _with(PCR4="zz" * 48),
        _with(PCR12=12),
        b'{"Measurements": {}, "Extra": 1}',
        b"[]",
        b"not json",
        b"\xff\xfe",
        b'{"Measurements": ' * 3000,
        b" " * 5000 + IMAGE,
        IMAGE[:-3] + b', "PCR4": "' + b"00" * 48 + b'"}}',  # a repeated key
    ],
)
def test_malformed_image_files_are_refused(data: bytes) -> None:
    with pytest.raises(ImageMeasurementsError) as caught:
        parse_image_measurements(data)
    assert isinstance(caught.value, MeasurementError)
    assert caught.value.__context__ is None and caught.value.__cause__ is None


# --- the image in the targets metadata --------------------------------------------------


def test_image_values_travel_signed_in_the_custom_field() -> None:
    targets = _signed(_targets())
    entry = json.loads(targets)["signed"]["targets"][IMAGE_MEASUREMENTS_ARTIFACT]
    assert entry["custom"] == json.loads(IMAGE)
    assert entry["length"] == len(IMAGE)
    verified = _verify(targets)
    assert dict(verified.image_measurements) == PCRS
    assert verified.artifacts[IMAGE_MEASUREMENTS_ARTIFACT].hashes["sha384"] == (
        hashlib.sha384(IMAGE).digest()
    )


def test_release_without_an_image_verifies_with_no_platform_registers() -> None:
    assert _verify(_signed(_targets(image_measurements=None))).image_measurements == {}


def test_changing_the_signed_image_values_breaks_the_signature() -> None:
    document = json.loads(_signed(_targets()))
    custom = document["signed"]["targets"][IMAGE_MEASUREMENTS_ARTIFACT]["custom"]
    custom["Measurements"]["PCR4"] = "00" * 48
    with pytest.raises(BadSignature):
        _verify(json.dumps(document).encode())


def test_malformed_signed_image_values_are_refused() -> None:
    def mutate(change: Any) -> bytes:
        md = _targets()
        change(md.signed.targets[IMAGE_MEASUREMENTS_ARTIFACT].unrecognized_fields)
        return _signed(md)

    for change in (
        lambda fields: fields.clear(),
        lambda fields: fields.update(custom={"Measurements": {"HashAlgorithm": "SHA384"}}),
        lambda fields: fields.update(extra=1),
    ):
        with pytest.raises(MalformedRelease) as caught:
            _verify(mutate(change))
        assert caught.value.__context__ is None


def test_builder_refuses_an_image_artifact_without_or_with_other_content() -> None:
    with pytest.raises(ValueError):
        _targets(
            image_measurements=None,
            artifacts={**CONFIG, IMAGE_MEASUREMENTS_ARTIFACT: CONFIG["config/cluster.json"]},
        )
    with pytest.raises(ValueError):
        _targets(artifacts={**CONFIG, IMAGE_MEASUREMENTS_ARTIFACT: CONFIG["config/cluster.json"]})
    with pytest.raises(ImageMeasurementsError):
        _targets(image_measurements=b"{}")


# --- the release floor ------------------------------------------------------------------


def test_floor_round_trips_and_is_in_the_logged_digest() -> None:
    targets = _signed(_targets(min_version=3))
    assert json.loads(targets)["signed"]["min_version"] == 3
    verified = _verify(targets)
    assert verified.min_version == 3
    other = _verify(_signed(_targets(min_version=2)))
    # The release digest (and so the log entry) commits to the floor.
    canonical = CanonicalJSONSerializer().serialize(_targets(min_version=3).signed)
    assert verified.release_digest == hashlib.sha384(canonical).digest()
    assert other.release_digest != verified.release_digest
    assert release_log_entry(other) != release_log_entry(verified)


def test_changing_the_floor_after_signing_breaks_the_signature() -> None:
    document = json.loads(_signed(_targets(min_version=3)))
    document["signed"]["min_version"] = 0
    with pytest.raises(BadSignature):
        _verify(json.dumps(document).encode())


@pytest.mark.parametrize("floor", [None, True, "3", -1, 5])
def test_a_missing_or_malformed_floor_is_refused(floor: object) -> None:
    md = _targets()
    if floor is None:
        del md.signed.unrecognized_fields["min_version"]
    else:
        md.signed.unrecognized_fields["min_version"] = floor
    with pytest.raises(MalformedRelease):
        _verify(_signed(md))


def test_a_fractional_floor_is_refused() -> None:
    # Canonical JSON has no floats, so such a floor cannot even be signed.
    document = json.loads(_signed(_targets()))
    document["signed"]["min_version"] = 3.0
    with pytest.raises(MalformedRelease):
        _verify(json.dumps(document).encode())


@pytest.mark.parametrize("floor", [-1, 5, True])
def test_builder_refuses_a_floor_outside_its_own_version(floor: object) -> None:
    with pytest.raises(ValueError):
        _targets(min_version=floor)


def test_floor_equal_to_the_version_and_zero_are_fine() -> None:
    assert _verify(_signed(_targets(min_version=4))).min_version == 4
    assert _verify(_signed(_targets(min_version=0))).min_version == 0
