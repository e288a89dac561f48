"""Fuzzing the keys node's answers: whatever a peer sends, the vault answers
with a grant or a typed denial, and the wire handler's decoder with a request
or a refusal -- never another exception.

Another exception is not only an untidy error: it crashes the
``KeyCustodyActor``, whose restart draws a new challenge key (every asker's
challenge is then refused) and whose supervisor gives up after a few
restarts a minute, so one crafted request a few times over would stop the
keys role. Denials never quote what was sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _custody_kit import MODEL, CustodyCloud
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.key_custody import MAX_KEY_MESSAGE_BYTES, KeyReleaseDenied
from actors.key_custody._wire import _decode_request
from protocol.attestation import DocumentKind
from protocol.key_custody import (
    ChallengeRequest,
    DataKeyGrant,
    DataKeyImport,
    DataKeyRequest,
    EnvelopeError,
    KeyringError,
)
from protocol.messages import Envelope, encode_envelope
from protocol.sealed_model import SealedModelFormatError

CANARY = "CANARY-keys-fuzz-5d1e"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> CustodyCloud:
    return CustodyCloud(Path(tmp_path_factory.mktemp("keys-fuzz")))


@pytest.fixture(scope="module")
def genuine(cloud: CustodyCloud) -> tuple[object, object, DataKeyRequest]:
    tpm, custody = cloud.inference_node("fuzzed-inference")
    return tpm, custody, cloud.request(tpm, custody)


def _mutate(data: bytes, at: int, value: int) -> bytes:
    if not data:
        return data
    at %= len(data)
    return data[:at] + bytes([value]) + data[at + 1 :]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.one_of(st.just(MODEL), st.text(max_size=40), st.just(CANARY)),
    version=st.one_of(st.none(), st.integers(1, 2**32 - 1)),
    fresh_challenge=st.booleans(),
    nonce=st.binary(max_size=32),
    static=st.one_of(st.binary(max_size=32), st.just(b"\x00" * 32)),
    evidence_change=st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)),
    evidence_kind=st.sampled_from(list(DocumentKind)),
    use_genuine_evidence=st.booleans(),
)
def test_any_data_key_request_gets_a_grant_or_a_typed_denial(
    cloud: CustodyCloud,
    genuine: tuple[object, object, DataKeyRequest],
    model: str,
    version: int | None,
    fresh_challenge: bool,
    nonce: bytes,
    static: bytes,
    evidence_change: tuple[int, int],
    evidence_kind: DocumentKind,
    use_genuine_evidence: bool,
) -> None:
    _, custody, request = genuine
    peer = custody.static_public  # type: ignore[attr-defined]
    if fresh_challenge:
        nonce = cloud.vault.issue_challenge(peer)
    evidence = (
        _mutate(request.evidence, *evidence_change) if use_genuine_evidence else CANARY.encode() * 4
    )
    crafted = DataKeyRequest(
        model_id=model,
        key_version=version,
        nonce=nonce,
        evidence=evidence,
        static_public=static,
        evidence_kind=evidence_kind,
    )
    try:
        answer = cloud.vault.release_data_key(crafted, peer=peer)
    except KeyReleaseDenied as denied:
        chain = [denied, denied.__context__, denied.__cause__]
        assert not any(CANARY in repr(error) for error in chain if error is not None)
        return
    # Only a genuine document over this very challenge gets anything, and
    # the genuine one was made over another challenge.
    assert isinstance(answer, DataKeyGrant)
    pytest.fail("a crafted request was granted a data key")


@settings(max_examples=100, deadline=None)
@given(
    model=st.one_of(st.just(MODEL), st.text(max_size=40), st.just(CANARY)),
    version=st.integers(1, 2**32 - 1),
    envelope=st.binary(max_size=200),
)
def test_any_import_is_stored_or_refused_typed(
    cloud: CustodyCloud, model: str, version: int, envelope: bytes
) -> None:
    crafted = DataKeyImport(model_id=model, key_version=version, envelope=envelope)
    with pytest.raises((EnvelopeError, KeyringError, SealedModelFormatError)) as refused:
        cloud.vault.import_data_key(crafted)
    assert CANARY not in str(refused.value)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=512),
        st.builds(
            lambda body, rid: encode_envelope(Envelope.wrap(body, request_id=rid)),
            st.sampled_from([ChallengeRequest()]),
            st.integers(0, 2**64 - 1),
        ),
    ),
    cut=st.integers(0, 600),
)
def test_the_wire_decoder_returns_a_request_or_a_refusal(payload: bytes, cut: int) -> None:
    for data in (payload, payload[:cut]):
        request, request_id = _decode_request(data, MAX_KEY_MESSAGE_BYTES)
        assert request is None or isinstance(
            request, (ChallengeRequest, DataKeyRequest, DataKeyImport)
        )
        assert request_id is None or 0 <= request_id < 2**64
