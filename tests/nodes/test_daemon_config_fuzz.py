"""Property tests of what the daemon reads from the operator's files and the
release: ``node.toml``, the tenants file and the release's attestation trust.
Whatever the bytes, the result is the typed error (or a value), no other
exception, no input in the message and no ``__context__`` carrying it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.ingress import TenantStore, TenantStoreError
from nodes.daemon.config import ConfigError, load_config
from nodes.daemon.tpm import TpmUnavailable, release_attestation_trust

CANARY = "canary-fuzz-c0de"

_SCHEMA_KEYS = [
    "node",
    "roles",
    "data_dir",
    "tpm",
    "backend",
    "release",
    "trust",
    "link",
    "peers",
    "listen",
    "keys",
    "inference",
    "slots",
    "tenants",
    "id",
    "key_sha256",
    "nitro_roots_sha256",
    "unknown",
]
# The canary is only ever a value: an unknown key is named (bounded) in the
# error by design, a value never is.

_toml_scalar = st.one_of(
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.sampled_from([CANARY, "simulated", "keys", "127.0.0.1:0", "[::1]:1", "a" * 64]),
    st.text(max_size=20),
)
_toml_value = st.recursive(
    _toml_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(_SCHEMA_KEYS), inner)
    ),
    max_leaves=12,
)


def _toml_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else repr(value).replace("inf", "inf")
    if isinstance(value, (int, str)):
        return json.dumps(value) if isinstance(value, str) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_text(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_text(v)}" for k, v in value.items()) + "}"


@st.composite
def toml_documents(draw: st.DrawFn) -> bytes:
    """Mostly well-formed TOML shaped like the schema, sometimes mangled bytes."""
    table = draw(st.dictionaries(st.sampled_from(_SCHEMA_KEYS), _toml_value, max_size=8))
    text = "".join(f"{json.dumps(k)} = {_toml_text(v)}\n" for k, v in table.items())
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=16)) + data[cut:]
    return data


def _assert_clean(error: BaseException) -> None:
    assert CANARY not in str(error)
    assert error.__context__ is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=toml_documents())
def test_config_and_tenants_files_raise_only_typed_errors(document: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "node.toml"
        path.write_bytes(document)
        try:
            load_config(path)
        except ConfigError as error:
            _assert_clean(error)
        try:
            TenantStore.load(path)
        except TenantStoreError as error:
            _assert_clean(error)


_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=70), st.just("a" * 64)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                ["attestation_trust", "nitro_roots_sha256", "tpm2_attestation_keys_sha256", "x"]
            ),
            inner,
        ),
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(value=_json_value, junk=st.binary(max_size=8))
def test_release_attestation_trust_raises_only_tpm_unavailable(value: object, junk: bytes) -> None:
    for data in (json.dumps(value).encode(), json.dumps(value).encode() + junk):
        try:
            trust = release_attestation_trust(data)
        except TpmUnavailable as error:
            _assert_clean(error)
        else:
            assert trust.nitro_roots  # a release that names no root admits no one


def test_release_attestation_trust_rules() -> None:
    root = "ab" * 32
    trust = release_attestation_trust(
        json.dumps({"attestation_trust": {"nitro_roots_sha256": [root]}}).encode()
    )
    assert trust.nitro_roots == {bytes.fromhex(root)}
    assert trust.tpm2_attestation_keys == frozenset()
    for refused in (
        {},
        {"attestation_trust": {}},
        {"attestation_trust": {"nitro_roots_sha256": []}},
        {"attestation_trust": {"nitro_roots_sha256": [root.upper()]}},
        {"attestation_trust": {"nitro_roots_sha256": [root], "extra": []}},
        {"attestation_trust": {"nitro_roots_sha256": [root], "tpm2_attestation_keys_sha256": 1}},
        {"attestation_trust": {"nitro_roots_sha256": [root] * 257}},
    ):
        try:
            release_attestation_trust(json.dumps(refused).encode())
        except TpmUnavailable:
            continue
        raise AssertionError(f"accepted {sorted(refused)}")
    deep = b"[" * 100_000 + b"]" * 100_000
    try:
        release_attestation_trust(deep)
    except TpmUnavailable:
        pass
    else:
        raise AssertionError("accepted a nesting bomb")
