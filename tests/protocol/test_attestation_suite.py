"""One verifier test suite over every evidence source.

Each source supplies authentic evidence, the moment it was produced, a
verifier pinned to the right root and what the evidence is known to contain.
The same tests then run over simulated NitroTPM documents and genuine AWS
documents; further kinds (TPM2 quotes) join by adding a source to SOURCES.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from protocol.attestation import (
    DEBUG_PCR0,
    AttestationError,
    AttestationVerifier,
    ChainCache,
    Check,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    PcrPolicy,
    PcrRelease,
    TrustAnchor,
    aws_nitro_root,
    noise_key_binding,
)
from simulations.nitrotpm import ManualClock, SimulatedNitroPKI, SimulatedNitroTPM

SIM_T0 = 1_760_000_123_456
DAY_MS = 86_400_000
VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "nitro"


@dataclass(frozen=True)
class EvidenceSource:
    name: str
    kind: DocumentKind
    evidence: bytes
    now_ms: int
    make_verifier: Callable[[ChainCache | None], AttestationVerifier]
    #: A verifier pinned to some other, unrelated root.
    make_foreign_verifier: Callable[[], AttestationVerifier]
    module_id: str | None = None
    nonce: bytes | None = None
    public_key: bytes | None = None
    known_pcrs: dict[int, bytes] = field(default_factory=dict)
    #: The evidence ends with a raw signature of this many bytes (Nitro: r || s).
    signature_tail: int = 96


def _nitro_verifier(anchor: TrustAnchor) -> Callable[[ChainCache | None], AttestationVerifier]:
    return lambda cache: AttestationVerifier([NitroAuthenticator(anchor, cache=cache)])


def _foreign_nitro() -> AttestationVerifier:
    return AttestationVerifier(
        [NitroAuthenticator(TrustAnchor(SimulatedNitroPKI("foreign").root_der))]
    )


def _simulated_sources() -> list[EvidenceSource]:
    sources = []
    for seed, nonce, key_material, user_data in [
        (1, b"\x01" * 32, b"\x02" * 32, None),
        ("node-b", b"", bytes(range(32)), b"release 2025.10"),
        (99, b"\xaa" * 1024, b"\x03" * 32, b"\xbb" * 1024),
    ]:
        tpm = SimulatedNitroTPM.from_seed(seed, clock=ManualClock(SIM_T0))
        tpm.pcr_extend(4, bytes(range(48)))
        public_key = noise_key_binding(key_material)
        document = tpm.attest(nonce=nonce, public_key=public_key, user_data=user_data)
        sources.append(
            EvidenceSource(
                name=f"simulated-{seed}",
                kind=DocumentKind.NITRO,
                evidence=document,
                now_ms=SIM_T0,
                make_verifier=_nitro_verifier(TrustAnchor(tpm.pki.root_der)),
                make_foreign_verifier=_foreign_nitro,
                module_id=tpm.module_id,
                nonce=nonce,
                public_key=public_key,
                known_pcrs={index: tpm.pcr_read(index) for index in range(24)},
            )
        )
    return sources


def _genuine_sources() -> list[EvidenceSource]:
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    anchor = aws_nitro_root()
    return [
        EvidenceSource(
            name="aws-" + Path(entry["file"]).stem,
            kind=DocumentKind.NITRO,
            evidence=(VECTORS / entry["file"]).read_bytes(),
            now_ms=entry["timestamp_ms"],
            make_verifier=_nitro_verifier(anchor),
            make_foreign_verifier=_foreign_nitro,
            module_id=entry["module_id"],
        )
        for entry in manifest["documents"]
        if entry["expect"] == "accept"
    ]


SOURCES: list[EvidenceSource] = _simulated_sources() + _genuine_sources()


@pytest.fixture(params=SOURCES, ids=lambda source: source.name)
def source(request: pytest.FixtureRequest) -> EvidenceSource:
    return request.param


NO_POLICY = Expectations(pcr_policy=None)


def _verify(source: EvidenceSource, expectations: Expectations = NO_POLICY, **overrides: object):
    evidence = overrides.pop("evidence", source.evidence)
    now_ms = overrides.pop("now_ms", source.now_ms)
    verifier = overrides.pop("verifier", None) or source.make_verifier(None)
    assert not overrides
    return verifier.verify(evidence, kind=source.kind, expectations=expectations, now_ms=now_ms)


def _check_of(call: Callable[[], object]) -> Check:
    with pytest.raises(AttestationError) as caught:
        call()
    return caught.value.check


def test_there_are_42_genuine_and_several_simulated_sources() -> None:
    assert sum(s.name.startswith("aws-") for s in SOURCES) == 42
    assert sum(s.name.startswith("simulated-") for s in SOURCES) >= 3


def test_accepts_authentic_evidence_at_its_time(source: EvidenceSource) -> None:
    verified = _verify(source)
    assert verified.kind is source.kind
    assert verified.verified_at_ms == source.now_ms
    assert verified.release is None
    if source.module_id is not None:
        assert verified.module_id == source.module_id
    if source.nonce is not None:
        assert verified.claims.nonce == source.nonce
    if source.public_key is not None:
        assert verified.public_key == source.public_key
    for index, value in source.known_pcrs.items():
        assert verified.pcrs[index] == value


def test_accepts_with_every_expectation_met(source: EvidenceSource) -> None:
    claims = _verify(source).claims
    pcrs = dict(claims.pcrs)
    policy = PcrPolicy(
        releases=(PcrRelease.from_mapping("own", pcrs),), allow_debug=pcrs.get(0) == DEBUG_PCR0
    )
    verified = _verify(
        source,
        Expectations(
            pcr_policy=policy,
            max_age_ms=0,
            expected_nonce=claims.nonce,
            expected_public_key=claims.public_key,
            expected_user_data=claims.user_data,
        ),
    )
    assert verified.release == "own"


def test_production_policy_rejects_debug_mode_and_accepts_otherwise(source: EvidenceSource) -> None:
    pcrs = dict(_verify(source).pcrs)
    debug = pcrs.get(0) == DEBUG_PCR0
    if debug:
        # A production policy cannot even pin a zero PCR0; pin the rest.
        rest = {index: value for index, value in pcrs.items() if index != 0}
        policy = PcrPolicy(releases=(PcrRelease.from_mapping("rest", rest),))
        assert (
            _check_of(lambda: _verify(source, Expectations(pcr_policy=policy))) is Check.PCR_POLICY
        )
    else:
        policy = PcrPolicy(releases=(PcrRelease.from_mapping("own", pcrs),))
        assert _verify(source, Expectations(pcr_policy=policy)).release == "own"


def test_pcr_outside_policy_is_rejected(source: EvidenceSource) -> None:
    pcrs = dict(_verify(source).pcrs)
    index = max(pcrs)
    altered = dict(pcrs, **{})
    altered[index] = bytes(b ^ 0x01 for b in pcrs[index])
    policy = PcrPolicy(releases=(PcrRelease.from_mapping("other", altered),), allow_debug=True)
    assert _check_of(lambda: _verify(source, Expectations(pcr_policy=policy))) is Check.PCR_POLICY


def test_any_of_several_releases_is_enough(source: EvidenceSource) -> None:
    pcrs = dict(_verify(source).pcrs)
    wrong = {index: b"\x07" * 48 for index in pcrs}
    policy = PcrPolicy(
        releases=(
            PcrRelease.from_mapping("old", wrong),
            PcrRelease.from_mapping("current", pcrs),
            PcrRelease.from_mapping("next", {0: b"\x09" * 48}),
        ),
        allow_debug=True,
    )
    assert _verify(source, Expectations(pcr_policy=policy)).release == "current"


def test_stale_evidence_is_rejected(source: EvidenceSource) -> None:
    expectations = Expectations(pcr_policy=None, max_age_ms=0)
    assert (
        _check_of(lambda: _verify(source, expectations, now_ms=source.now_ms + 1))
        is Check.FRESHNESS
    )


def test_evidence_from_the_future_is_rejected(source: EvidenceSource) -> None:
    expectations = Expectations(pcr_policy=None, max_future_skew_ms=0)
    check = _check_of(lambda: _verify(source, expectations, now_ms=source.now_ms - 1))
    # The signing certificate may have been issued within the same millisecond.
    assert check in (Check.FRESHNESS, Check.CHAIN_VALIDITY)


def test_wrong_nonce_is_rejected(source: EvidenceSource) -> None:
    expectations = Expectations(pcr_policy=None, expected_nonce=b"not the nonce we issued")
    assert _check_of(lambda: _verify(source, expectations)) is Check.NONCE


def test_wrong_bound_key_is_rejected(source: EvidenceSource) -> None:
    expectations = Expectations(
        pcr_policy=None, expected_public_key=noise_key_binding(b"\x55" * 32)
    )
    assert _check_of(lambda: _verify(source, expectations)) is Check.BOUND_KEY


def test_foreign_root_is_rejected(source: EvidenceSource) -> None:
    assert (
        _check_of(lambda: _verify(source, verifier=source.make_foreign_verifier()))
        is Check.CHAIN_ROOT
    )


def test_expired_chain_is_rejected(source: EvidenceSource) -> None:
    later = source.now_ms + 40 * DAY_MS
    assert _check_of(lambda: _verify(source, now_ms=later)) is Check.CHAIN_VALIDITY


def test_signature_bit_flips_are_rejected(source: EvidenceSource) -> None:
    tail = source.signature_tail
    for position in sorted({1, tail // 5, tail // 2, tail // 2 + 1, tail - 16, tail}):
        tampered = bytearray(source.evidence)
        tampered[-position] ^= 0x01 << (position % 8)
        evidence = bytes(tampered)
        assert _check_of(lambda e=evidence: _verify(source, evidence=e)) is Check.SIGNATURE


# A flipped bit inside a certificate's name makes cryptography warn about the
# malformed attribute while parsing it; the verifier still rejects it by type.
@pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")
def test_sampled_bit_flips_anywhere_are_rejected(source: EvidenceSource) -> None:
    rng = random.Random(source.name)
    positions = rng.sample(range(len(source.evidence)), 40)
    for position in positions:
        tampered = bytearray(source.evidence)
        tampered[position] ^= 1 << rng.randrange(8)
        with pytest.raises(AttestationError):
            _verify(source, evidence=bytes(tampered))


def test_truncated_and_extended_evidence_is_rejected(source: EvidenceSource) -> None:
    length = len(source.evidence)
    for cut in (0, 1, 2, length // 3, length // 2, length - 97, length - 1):
        check = _check_of(lambda cut=cut: _verify(source, evidence=source.evidence[:cut]))
        assert check in (Check.SIZE, Check.CBOR)
    assert _check_of(lambda: _verify(source, evidence=source.evidence + b"\x00")) is Check.CBOR


def test_cached_chain_gives_the_same_verdicts(source: EvidenceSource) -> None:
    cache = ChainCache()
    verifier = source.make_verifier(cache)
    first = _verify(source, verifier=verifier)
    second = _verify(source, verifier=verifier)
    assert first == second
    assert cache.hits >= 1
    later = source.now_ms + 40 * DAY_MS
    assert (
        _check_of(lambda: _verify(source, verifier=verifier, now_ms=later)) is Check.CHAIN_VALIDITY
    )
    tampered = bytearray(source.evidence)
    tampered[-1] ^= 0x80
    assert (
        _check_of(lambda: _verify(source, verifier=verifier, evidence=bytes(tampered)))
        is Check.SIGNATURE
    )
