"""Units of the attestation package: strict CBOR, PCR policy, chain cache, binding, dispatch."""

from __future__ import annotations

import hashlib
import json

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.attestation import (
    DEBUG_PCR0,
    NOISE_KEY_BINDING_DOMAIN,
    AttestationError,
    AttestationVerifier,
    ChainCache,
    Check,
    ConfigurationError,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    PcrPolicy,
    PcrRelease,
    TrustAnchor,
    aws_nitro_root,
    noise_key_binding,
)
from protocol.attestation._cbor import decode_strict
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM

# -- strict CBOR ---------------------------------------------------------------

plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(0, 40), children, max_size=4)
    ),
    max_leaves=12,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(plain_values)
@settings(max_examples=300)
def test_plain_values_round_trip(value: object) -> None:
    encoded = cbor2.dumps(value)
    if _depth(value) > 6:
        with pytest.raises(AttestationError):
            decode_strict(encoded, what="value")
    else:
        assert decode_strict(encoded, what="value") == value


@given(st.integers(min_value=0, max_value=2**64 - 1), plain_values)
@settings(max_examples=300)
def test_every_tag_is_refused(tag: int, value: object) -> None:
    with pytest.raises(AttestationError) as caught:
        decode_strict(cbor2.dumps(cbor2.CBORTag(tag, value)), what="value")
    assert caught.value.check is Check.CBOR


@pytest.mark.parametrize("tag", [0, 1, 2, 3, 4, 5, 24, 25, 28, 29, 30, 32, 37, 256, 258, 55799])
def test_well_known_tags_are_refused(tag: int) -> None:
    for value in (0, b"\x01", "x", [1, 2], {}):
        with pytest.raises(AttestationError):
            decode_strict(cbor2.dumps(cbor2.CBORTag(tag, value)), what="value")


@pytest.mark.parametrize(
    "encoded",
    [
        b"\xf9\x3c\x00",  # half float
        b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # double
        b"\xf7",  # undefined
        b"\xf0",  # simple value 16
        b"\xa2\x01\x01\x01\x02",  # duplicate key
        b"\xbf\x01\x01\x01\x02\xff",  # duplicate key, indefinite map
        b"\x01\x02",  # trailing byte
        b"\x82\x01",  # truncated
        b"\x62\xff\xfe",  # invalid UTF-8
        b"\xa1\x81\x01\x01",  # array as a map key
        b"",
    ],
)
def test_malformed_cbor_is_refused(encoded: bytes) -> None:
    with pytest.raises(AttestationError) as caught:
        decode_strict(encoded, what="value")
    assert caught.value.check is Check.CBOR


def test_deep_nesting_is_refused_without_recursion() -> None:
    with pytest.raises(AttestationError):
        decode_strict(b"\x81" * 10_000 + b"\x00", what="value")


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_arbitrary_bytes_never_escape_as_untyped_errors(data: bytes) -> None:
    verifier = AttestationVerifier([NitroAuthenticator(aws_nitro_root())])
    with pytest.raises(AttestationError):
        verifier.verify(data, kind=DocumentKind.NITRO, expectations=Expectations(None), now_ms=1)


# -- PCR policy ----------------------------------------------------------------

A = b"\xaa" * 48
B = b"\xbb" * 48


def test_policy_matches_any_release_entirely() -> None:
    policy = PcrPolicy(
        releases=(
            PcrRelease.from_mapping("one", {0: A, 4: A}),
            PcrRelease.from_mapping("two", {0: B, 4: B}),
        )
    )
    assert policy.evaluate({0: A, 4: A, 7: B}).name == "one"
    assert policy.evaluate({0: B, 4: B}).name == "two"
    for mixed in ({0: A, 4: B}, {0: A}, {}):
        with pytest.raises(AttestationError) as caught:
            policy.evaluate(mixed)
        assert caught.value.check is Check.PCR_POLICY


def test_production_policy_refuses_debug_pcr0_even_if_released() -> None:
    with pytest.raises(ConfigurationError):
        PcrPolicy(releases=(PcrRelease.from_mapping("dbg", {0: DEBUG_PCR0}),))
    debug_ok = PcrPolicy(
        releases=(PcrRelease.from_mapping("dbg", {0: DEBUG_PCR0}),), allow_debug=True
    )
    assert debug_ok.evaluate({0: DEBUG_PCR0}).name == "dbg"
    production = PcrPolicy(releases=(PcrRelease.from_mapping("p", {4: A}),))
    with pytest.raises(AttestationError):
        production.evaluate({0: DEBUG_PCR0, 4: A})


pcr_maps = st.dictionaries(st.integers(0, 31), st.binary(min_size=48, max_size=48), min_size=1)


@given(st.lists(pcr_maps, min_size=1, max_size=4), st.booleans())
def test_policy_json_round_trips(maps: list[dict[int, bytes]], allow_debug: bool) -> None:
    releases = tuple(PcrRelease.from_mapping(f"r{i}", m) for i, m in enumerate(maps))
    if not allow_debug and any(m.get(0) == DEBUG_PCR0 for m in maps):
        return
    policy = PcrPolicy(releases=releases, allow_debug=allow_debug)
    assert PcrPolicy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        {"version": 2, "releases": [{"name": "a", "pcrs": {"0": "aa" * 48}}]},
        {"version": 1, "releases": []},
        {"version": 1, "releases": [{"name": "a", "pcrs": {}}]},
        {"version": 1, "releases": [{"name": "a", "pcrs": {"32": "aa" * 48}}]},
        {"version": 1, "releases": [{"name": "a", "pcrs": {"07": "aa" * 48}}]},
        {"version": 1, "releases": [{"name": "a", "pcrs": {"0": "aa" * 47}}]},
        {"version": 1, "releases": [{"name": "a", "pcrs": {"0": "zz" * 48}}]},
        {"version": 1, "releases": [{"name": "a", "pcrs": {"0": "aa" * 48}, "x": 1}]},
        {"version": 1, "releases": [{"name": "a", "pcrs": {"0": "aa" * 48}}], "extra": 1},
        {"version": 1, "allow_debug": "no", "releases": [{"name": "a", "pcrs": {"0": "aa" * 48}}]},
        {
            "version": 1,
            "releases": [
                {"name": "a", "pcrs": {"0": "aa" * 48}},
                {"name": "a", "pcrs": {"1": "aa" * 48}},
            ],
        },
        {"version": 1, "releases": [{"name": "a", "pcrs": {"0": "00" * 48}}]},
        {"version": True, "releases": [{"name": "a", "pcrs": {"0": "aa" * 48}}]},
        {"version": 1.0, "releases": [{"name": "a", "pcrs": {"0": "aa" * 48}}]},
        # One PCR listed twice: the second value must not silently win.
        '{"version": 1, "releases": [{"name": "a", "pcrs": {"0": "'
        + "aa" * 48
        + '", "0": "'
        + "bb" * 48
        + '"}}]}',
    ],
)
def test_malformed_policy_files_are_refused(document: object) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(ConfigurationError):
        PcrPolicy.from_json(text)


# -- key binding ------------------------------------------------------------------


def test_noise_key_binding_is_domain_separated_sha256() -> None:
    key = bytes(range(32))
    assert noise_key_binding(key) == hashlib.sha256(b"mantle/noise-static/v1\x00" + key).digest()
    assert NOISE_KEY_BINDING_DOMAIN == b"mantle/noise-static/v1\x00"
    assert noise_key_binding(key) != hashlib.sha256(key).digest()
    with pytest.raises(ValueError):
        noise_key_binding(b"short")


# -- chain cache and dispatch -------------------------------------------------------

T0 = 1_760_000_000_000


def test_chain_cache_reuses_prefixes_and_still_checks_validity() -> None:
    clock = ManualClock(T0)
    tpm = SimulatedNitroTPM.from_seed("cache", clock=clock)
    first = tpm.attest(nonce=b"1")
    cache = ChainCache(max_entries=8)
    verifier = AttestationVerifier([NitroAuthenticator(TrustAnchor(tpm.pki.root_der), cache=cache)])
    expectations = Expectations(pcr_policy=None)
    verifier.verify(first, kind=DocumentKind.NITRO, expectations=expectations, now_ms=T0)
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 4)
    verifier.verify(first, kind=DocumentKind.NITRO, expectations=expectations, now_ms=T0)
    assert cache.hits == 1
    # Two hours later a new signing certificate: the cached prefix
    # (root..instance) is reused and only the new leaf is checked.
    clock.advance(2 * 3600)
    second = tpm.attest(nonce=b"2")
    verifier.verify(
        second, kind=DocumentKind.NITRO, expectations=expectations, now_ms=T0 + 7_200_000
    )
    assert cache.hits == 2 and len(cache) == 5
    # The first document's leaf has expired by now, cached or not.
    with pytest.raises(AttestationError) as caught:
        verifier.verify(
            first, kind=DocumentKind.NITRO, expectations=expectations, now_ms=T0 + 4 * 3_600_000
        )
    assert caught.value.check is Check.CHAIN_VALIDITY


def test_chain_cache_is_bounded() -> None:
    cache = ChainCache(max_entries=2)
    tpm = SimulatedNitroTPM.from_seed("bounded", clock=ManualClock(T0))
    verifier = AttestationVerifier([NitroAuthenticator(TrustAnchor(tpm.pki.root_der), cache=cache)])
    verifier.verify(
        tpm.attest(), kind=DocumentKind.NITRO, expectations=Expectations(None), now_ms=T0
    )
    assert len(cache) == 2
    with pytest.raises(ValueError):
        ChainCache(max_entries=0)


def test_unregistered_kind_is_refused_by_name() -> None:
    verifier = AttestationVerifier([NitroAuthenticator(aws_nitro_root())])
    assert verifier.kinds == frozenset({DocumentKind.NITRO})
    with pytest.raises(AttestationError) as caught:
        verifier.verify(
            b"\x00", kind=DocumentKind.TPM2_QUOTE, expectations=Expectations(None), now_ms=1
        )
    assert caught.value.check is Check.KIND
    with pytest.raises(ValueError):
        AttestationVerifier(
            [NitroAuthenticator(aws_nitro_root()), NitroAuthenticator(aws_nitro_root())]
        )


def test_trust_anchor_pin_mismatch_is_a_configuration_error() -> None:
    tpm = SimulatedNitroTPM.from_seed("pin", clock=ManualClock(T0))
    with pytest.raises(ConfigurationError):
        TrustAnchor.from_pem(tpm.pki.root_pem(), expected_sha256=b"\x00" * 32)
    with pytest.raises(ConfigurationError):
        TrustAnchor.from_pem(b"not pem")
    with pytest.raises(ConfigurationError):
        TrustAnchor.from_der(b"\x30\x00")
