"""Genuine AWS documents: accepted exactly as AWS produces them, negatives rejected."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from protocol.attestation import (
    AWS_NITRO_ROOT_SHA256,
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
)


def _manifest(test_data: Path) -> list[dict[str, object]]:
    return json.loads((test_data / "nitro" / "manifest.json").read_text())["documents"]


def test_embedded_aws_root_matches_the_published_hash_and_vector_file(test_data: Path) -> None:
    anchor = aws_nitro_root()
    assert anchor.sha256 == AWS_NITRO_ROOT_SHA256
    from_file = TrustAnchor.from_pem(
        (test_data / "nitro" / "aws_nitro_root.pem").read_bytes(),
        expected_sha256=AWS_NITRO_ROOT_SHA256,
    )
    assert from_file.der == anchor.der


def test_every_genuine_document_verifies_and_every_negative_is_rejected(
    test_data: Path,
) -> None:
    entries = _manifest(test_data)
    verifier = AttestationVerifier([NitroAuthenticator(aws_nitro_root(), cache=ChainCache())])
    accepted, rejected = [], {}
    for entry in entries:
        data = (test_data / "nitro" / str(entry["file"])).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        try:
            verified = verifier.verify(
                data,
                kind=DocumentKind.NITRO,
                expectations=Expectations(pcr_policy=None),
                now_ms=int(entry["timestamp_ms"]),  # type: ignore[call-overload]
            )
        except AttestationError as exc:
            rejected[entry["file"]] = exc.check
            continue
        accepted.append(entry["file"])
        assert verified.module_id == entry["module_id"]
        assert verified.claims.timestamp_ms == entry["timestamp_ms"]
        assert verified.debug_mode == entry["debug"]
    expected_accept = [e["file"] for e in entries if e["expect"] == "accept"]
    assert sorted(accepted) == sorted(expected_accept)
    assert len(accepted) == 42
    assert rejected == {
        "negative/tampered_remote-attestation-verifier_5f42eb91.cbor": Check.SIGNATURE,
        # Self-signed look-alike: its unprotected header is CBOR null, never AWS's {}.
        "negative/not-aws_nitrite_e388022c.cbor": Check.COSE_STRUCTURE,
    }


def test_both_pcr_field_names_and_map_encodings_are_read(test_data: Path) -> None:
    counts: dict[tuple[str, int], int] = {}
    for entry in _manifest(test_data):
        if entry["expect"] != "accept":
            continue
        data = (test_data / "nitro" / str(entry["file"])).read_bytes()
        authenticator = NitroAuthenticator(aws_nitro_root())
        document = authenticator.authenticate_document(data, now_ms=int(entry["timestamp_ms"]))  # type: ignore[call-overload]
        counts.setdefault((document.payload.pcrs_field, len(document.payload.pcrs)), 0)
        counts[(document.payload.pcrs_field, len(document.payload.pcrs))] += 1
    assert counts == {("pcrs", 16): 39, ("nitrotpm_pcrs", 24): 3}


@pytest.mark.parametrize("debug", [True, False])
def test_production_policy_rejects_genuine_debug_documents(test_data: Path, debug: bool) -> None:
    entry = next(e for e in _manifest(test_data) if e["expect"] == "accept" and e["debug"] is debug)
    data = (test_data / "nitro" / str(entry["file"])).read_bytes()
    verifier = AttestationVerifier([NitroAuthenticator(aws_nitro_root())])
    now_ms = int(entry["timestamp_ms"])  # type: ignore[call-overload]
    pcrs = verifier.authenticate(data, kind=DocumentKind.NITRO, now_ms=now_ms).pcrs
    pinned = {index: value for index, value in pcrs.items() if index != 0}
    production = PcrPolicy(releases=(PcrRelease.from_mapping("release", pinned),))
    if debug:
        with pytest.raises(AttestationError) as caught:
            verifier.verify(
                data, kind=DocumentKind.NITRO, expectations=Expectations(production), now_ms=now_ms
            )
        assert caught.value.check is Check.PCR_POLICY
        permissive = PcrPolicy(releases=production.releases, allow_debug=True)
        assert verifier.verify(
            data, kind=DocumentKind.NITRO, expectations=Expectations(permissive), now_ms=now_ms
        ).debug_mode
    else:
        verified = verifier.verify(
            data, kind=DocumentKind.NITRO, expectations=Expectations(production), now_ms=now_ms
        )
        assert verified.release == "release"
        assert not verified.debug_mode


def test_genuine_documents_expire_with_their_signing_certificate(test_data: Path) -> None:
    entry = next(e for e in _manifest(test_data) if e["kind"] == "nitrotpm")
    data = (test_data / "nitro" / str(entry["file"])).read_bytes()
    verifier = AttestationVerifier([NitroAuthenticator(aws_nitro_root())])
    with pytest.raises(AttestationError) as caught:
        verifier.verify(
            data,
            kind=DocumentKind.NITRO,
            expectations=Expectations(pcr_policy=None),
            now_ms=int(entry["timestamp_ms"]) + 4 * 3_600_000,  # type: ignore[call-overload]
        )
    assert caught.value.check is Check.CHAIN_VALIDITY
