"""One verifier test suite over every evidence source.

Each source supplies authentic evidence, the moment it was produced, a
verifier pinned to the right root and what the evidence is known to contain.
The same tests then run over three kinds of evidence:

* simulated NitroTPM documents (COSE_Sign1 with a simulated AWS PKI);
* the 42 genuine AWS NitroTPM documents in the shared vectors;
* TPM 2.0 quotes made by a real swtpm, started once per test session.

Sources are parametrized by name, known at collection; a name resolves to its
evidence when a test runs, so the swtpm is started only when a quote source is
selected (and those tests are skipped, with the reason, only where swtpm or
tpm2-pytss is not installed). Where the kinds differ in mechanics rather than
in meaning, the source says how: which evidence bytes hold the raw signature,
whether the evidence carries a timestamp, whether it is trusted through a
certificate chain (which expires and is cached) or a pinned key (which does
neither), and which check names an untrusted root.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _swtpm import Swtpm, require_swtpm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

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
from protocol.attestation import tpm2_quote as quote
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

SIM_T0 = 1_760_000_123_456
DAY_MS = 86_400_000
VECTORS = Path(__file__).resolve().parents[1] / "data" / "nitro"
NITRO_SIGNATURE_SIZE = 96  # ECDSA P-384 r || s, the end of every COSE_Sign1 here

# (nonce, key material for the bound key, user data) of each source made here.
VARIANTS: list[tuple[bytes, bytes, bytes | None]] = [
    (b"\x01" * 32, b"\x02" * 32, None),
    (b"", bytes(range(32)), b"release 2025.10"),
    (b"\xaa" * 1024, b"\x03" * 32, b"\xbb" * 1024),
]


@dataclass(frozen=True)
class EvidenceSource:
    name: str
    kind: DocumentKind
    evidence: bytes
    now_ms: int
    make_verifier: Callable[[ChainCache | None], AttestationVerifier]
    #: A verifier pinned to some other, unrelated root.
    make_foreign_verifier: Callable[[], AttestationVerifier]
    #: Offsets in ``evidence`` of the raw signature value, in order (Nitro:
    #: the trailing r || s; a quote: r and s inside the envelope's
    #: TPMT_SIGNATURE). Flipping any bit there must fail the signature check.
    signature_offsets: tuple[int, ...]
    #: The check that names evidence signed under a root the verifier does not trust.
    untrusted_root_check: Check
    #: The evidence states when it was made (Nitro); otherwise freshness is
    #: by nonce only and an age bound must be refused (quotes).
    timestamped: bool
    #: Trusted through a certificate chain that expires and is cached (Nitro);
    #: otherwise through a pinned key with no validity period (quotes).
    certificate_chain: bool
    module_id: str | None = None
    nonce: bytes | None = None
    public_key: bytes | None = None
    known_pcrs: dict[int, bytes] = field(default_factory=dict)


def _nitro_verifier(anchor: TrustAnchor) -> Callable[[ChainCache | None], AttestationVerifier]:
    return lambda cache: AttestationVerifier([NitroAuthenticator(anchor, cache=cache)])


def _foreign_nitro() -> AttestationVerifier:
    return AttestationVerifier(
        [NitroAuthenticator(TrustAnchor(SimulatedNitroPKI("foreign").root_der))]
    )


def _nitro_signature_offsets(evidence: bytes) -> tuple[int, ...]:
    return tuple(range(len(evidence) - NITRO_SIGNATURE_SIZE, len(evidence)))


def _nitro_source(
    name: str, evidence: bytes, now_ms: int, anchor: TrustAnchor, **known: object
) -> EvidenceSource:
    return EvidenceSource(
        name=name,
        kind=DocumentKind.NITRO,
        evidence=evidence,
        now_ms=now_ms,
        make_verifier=_nitro_verifier(anchor),
        make_foreign_verifier=_foreign_nitro,
        signature_offsets=_nitro_signature_offsets(evidence),
        untrusted_root_check=Check.CHAIN_ROOT,
        timestamped=True,
        certificate_chain=True,
        **known,  # type: ignore[arg-type]
    )


def _simulated_sources() -> list[EvidenceSource]:
    sources = []
    for seed, (nonce, key_material, user_data) in zip([1, "node-b", 99], VARIANTS, strict=True):
        tpm = SimulatedNitroTPM.from_seed(seed, clock=ManualClock(SIM_T0))
        tpm.pcr_extend(4, bytes(range(48)))
        public_key = noise_key_binding(key_material)
        document = tpm.attest(nonce=nonce, public_key=public_key, user_data=user_data)
        sources.append(
            _nitro_source(
                f"simulated-{seed}",
                document,
                SIM_T0,
                TrustAnchor(tpm.pki.root_der),
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
        _nitro_source(
            "aws-" + Path(entry["file"]).stem,
            (VECTORS / entry["file"]).read_bytes(),
            entry["timestamp_ms"],
            anchor,
            module_id=entry["module_id"],
        )
        for entry in manifest["documents"]
        if entry["expect"] == "accept"
    ]


# --------------------------------------------------------------------------- swtpm quotes

SWTPM_SOURCE_NAMES = [f"swtpm-quote-{number}" for number in range(1, len(VARIANTS) + 1)]


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _quote_verifier(ak_public: bytes) -> Callable[[ChainCache | None], AttestationVerifier]:
    trust = quote.QuoteTrust.from_ak_public_keys([ak_public])
    # A pinned AK has no certificate chain: there is nothing for a cache to hold.
    return lambda cache: AttestationVerifier([quote.Tpm2QuoteAuthenticator(trust)])


def _foreign_quote() -> AttestationVerifier:
    other = quote.QuoteTrust.from_ak_public_keys([_spki(ec.generate_private_key(ec.SECP384R1()))])
    return AttestationVerifier([quote.Tpm2QuoteAuthenticator(other)])


def _quote_signature_offsets(evidence: bytes) -> tuple[int, ...]:
    """Where r and s of the quote's TPMT_SIGNATURE sit in the CBOR envelope.

    TPMT_SIGNATURE for ECDSA is sigAlg(2) hashAlg(2) r(2 + n) s(2 + n). The
    envelope holds it as one byte string, so its bytes appear verbatim.
    """
    raw = quote.decode_quote_document(evidence).signature
    signature = quote.parse_signature(raw)
    start = evidence.find(raw)
    assert start > 0 and evidence.find(raw, start + 1) == -1
    r_start = start + 6
    s_start = r_start + len(signature.r) + 2
    return tuple(range(r_start, r_start + len(signature.r))) + tuple(
        range(s_start, s_start + len(signature.s))
    )


@pytest.fixture(scope="session")
def swtpm_sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, EvidenceSource]]:
    """Quotes from one swtpm for the whole session, stopped at teardown."""
    require_swtpm()
    from nodes.tpm import TpmDeviceBackend

    # The ESAPI logs expected TPM errors to stderr; the tests assert on typed errors.
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    instance = Swtpm(tmp_path_factory.mktemp("swtpm-suite"))
    instance.start()
    try:
        with TpmDeviceBackend(instance.tcti) as tpm:
            # On a booted machine firmware has measured itself into PCR0; a
            # fresh swtpm's all-zero PCR0 would read as Nitro debug mode.
            tpm.pcr_extend(0, hashlib.sha384(b"firmware").digest())
            tpm.pcr_extend(4, bytes(range(48)))
            ak_public = tpm.attestation_key_public()
            module_id = f"tpm2-ak-{quote.spki_fingerprint(ak_public)[:8].hex()}"
            sources = {}
            for name, (nonce, key_material, user_data) in zip(
                SWTPM_SOURCE_NAMES, VARIANTS, strict=True
            ):
                public_key = noise_key_binding(key_material)
                document = tpm.attest(nonce=nonce, public_key=public_key, user_data=user_data)
                sources[name] = EvidenceSource(
                    name=name,
                    kind=DocumentKind.TPM2_QUOTE,
                    evidence=document,
                    # A quote carries no wall-clock time; any moment will do.
                    now_ms=SIM_T0,
                    make_verifier=_quote_verifier(ak_public),
                    make_foreign_verifier=_foreign_quote,
                    signature_offsets=_quote_signature_offsets(document),
                    untrusted_root_check=Check.ATTESTATION_KEY,
                    timestamped=False,
                    certificate_chain=False,
                    module_id=module_id,
                    nonce=nonce,
                    public_key=public_key,
                    known_pcrs=dict(tpm.pcr_read_many(range(24))),
                )
        yield sources
    finally:
        instance.stop()


# --------------------------------------------------------------------------- the sources

STATIC_SOURCES: dict[str, EvidenceSource] = {
    source.name: source for source in _simulated_sources() + _genuine_sources()
}
SOURCE_NAMES: list[str] = [*STATIC_SOURCES, *SWTPM_SOURCE_NAMES]


@pytest.fixture(params=SOURCE_NAMES)
def source(request: pytest.FixtureRequest) -> EvidenceSource:
    name: str = request.param
    if name in STATIC_SOURCES:
        return STATIC_SOURCES[name]
    # Requested only here, so selecting Nitro sources alone never starts swtpm.
    quotes: dict[str, EvidenceSource] = request.getfixturevalue("swtpm_sources")
    return quotes[name]


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


def test_there_are_42_genuine_several_simulated_and_swtpm_quote_sources() -> None:
    assert sum(name.startswith("aws-") for name in SOURCE_NAMES) == 42
    assert sum(name.startswith("simulated-") for name in SOURCE_NAMES) >= 3
    assert len(SWTPM_SOURCE_NAMES) >= 2
    assert set(SWTPM_SOURCE_NAMES) <= set(SOURCE_NAMES)
    assert len(set(SOURCE_NAMES)) == len(SOURCE_NAMES)


def test_swtpm_quote_sources_are_distinct_quotes(
    swtpm_sources: dict[str, EvidenceSource],
) -> None:
    assert sorted(swtpm_sources) == sorted(SWTPM_SOURCE_NAMES)
    assert {source.kind for source in swtpm_sources.values()} == {DocumentKind.TPM2_QUOTE}
    assert len({source.evidence for source in swtpm_sources.values()}) == len(swtpm_sources)
    assert len({source.nonce for source in swtpm_sources.values()}) == len(swtpm_sources)


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
            # Untimestamped evidence cannot meet an age bound; its nonce is its freshness.
            max_age_ms=0 if source.timestamped else None,
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
    if source.timestamped:
        assert (
            _check_of(lambda: _verify(source, expectations, now_ms=source.now_ms + 1))
            is Check.FRESHNESS
        )
    else:
        # No timestamp means no age to bound: any age limit is refused outright,
        # even a generous one at the very moment the evidence was made.
        for max_age_ms in (0, DAY_MS):
            bounded = Expectations(pcr_policy=None, max_age_ms=max_age_ms)
            assert _check_of(lambda e=bounded: _verify(source, e)) is Check.FRESHNESS


def test_issued_nonce_is_accepted_and_absent_nonce_is_stale(source: EvidenceSource) -> None:
    claims = _verify(source).claims
    if claims.nonce is not None:
        issued = Expectations(pcr_policy=None, expected_nonce=claims.nonce)
        assert _verify(source, issued).claims.nonce == claims.nonce
    else:
        wanted = Expectations(pcr_policy=None, expected_nonce=b"\x00" * 32)
        assert _check_of(lambda: _verify(source, wanted)) is Check.NONCE


def test_evidence_from_the_future_is_rejected(source: EvidenceSource) -> None:
    expectations = Expectations(pcr_policy=None, max_future_skew_ms=0)
    if not source.timestamped:
        # Nothing dates the evidence, so no clock skew can reject it; the nonce
        # (tested above and below) is what makes it fresh.
        assert _verify(source, expectations, now_ms=source.now_ms - DAY_MS).release is None
        return
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
        is source.untrusted_root_check
    )


def test_expired_chain_is_rejected(source: EvidenceSource) -> None:
    later = source.now_ms + 40 * DAY_MS
    if source.certificate_chain:
        assert _check_of(lambda: _verify(source, now_ms=later)) is Check.CHAIN_VALIDITY
    else:
        # A pinned attestation key has no validity period: it is trusted until
        # it is removed from the pinned set, so nothing expires here.
        assert _verify(source, now_ms=later).verified_at_ms == later


def test_signature_bit_flips_are_rejected(source: EvidenceSource) -> None:
    offsets = source.signature_offsets
    size = len(offsets)
    # Counted from the end of the signature: its last byte, a fifth and half
    # way back, 16 bytes from its start and its first byte.
    for position in sorted({1, size // 5, size // 2, size // 2 + 1, size - 16, size}):
        tampered = bytearray(source.evidence)
        tampered[offsets[-position]] ^= 0x01 << (position % 8)
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
    for cut in (0, 1, 2, length // 3, length // 2, source.signature_offsets[0] - 1, length - 1):
        check = _check_of(lambda cut=cut: _verify(source, evidence=source.evidence[:cut]))
        assert check in (Check.SIZE, Check.CBOR)
    assert _check_of(lambda: _verify(source, evidence=source.evidence + b"\x00")) is Check.CBOR


def test_cached_chain_gives_the_same_verdicts(source: EvidenceSource) -> None:
    cache = ChainCache()
    verifier = source.make_verifier(cache)
    first = _verify(source, verifier=verifier)
    second = _verify(source, verifier=verifier)
    assert first == second
    if source.certificate_chain:
        assert cache.hits >= 1
        later = source.now_ms + 40 * DAY_MS
        assert (
            _check_of(lambda: _verify(source, verifier=verifier, now_ms=later))
            is Check.CHAIN_VALIDITY
        )
    else:
        # A pinned key needs no chain, so the cache is never consulted.
        assert cache.hits == 0
    tampered = bytearray(source.evidence)
    tampered[source.signature_offsets[-1]] ^= 0x80
    assert (
        _check_of(lambda: _verify(source, verifier=verifier, evidence=bytes(tampered)))
        is Check.SIGNATURE
    )
