"""The nonce a document carries on a secure channel: derived from the
handshake hash, separated by the attesting role and by purpose."""

from __future__ import annotations

import hashlib

import pytest

from protocol.attestation import (
    CHALLENGE_BYTES,
    CHANNEL_ATTESTATION_DOMAIN,
    channel_attestation_nonce,
)

H = bytes(range(32))
CHALLENGE = bytes(range(100, 132))


def test_the_derivation_is_the_documented_one() -> None:
    assert CHANNEL_ATTESTATION_DOMAIN == b"mantle/channel-attestation/v1\x00"
    assert (
        channel_attestation_nonce(H, attester_is_initiator=True)
        == hashlib.sha256(CHANNEL_ATTESTATION_DOMAIN + b"I" + b"\x20" + H + b"\x00").digest()
    )
    assert (
        channel_attestation_nonce(H, attester_is_initiator=False, challenge=CHALLENGE)
        == hashlib.sha256(
            CHANNEL_ATTESTATION_DOMAIN + b"R" + b"\x20" + H + b"\x01" + CHALLENGE
        ).digest()
    )


def test_role_purpose_and_session_each_change_the_nonce() -> None:
    nonces = {
        channel_attestation_nonce(h, attester_is_initiator=role, challenge=challenge)
        for h in (H, bytes(32))
        for role in (True, False)
        for challenge in (None, CHALLENGE, bytes(CHALLENGE_BYTES))
    }
    assert len(nonces) == 12


@pytest.mark.parametrize(
    ("handshake_hash", "challenge"),
    [(bytes(31), None), (b"", None), (H, b""), (H, bytes(31)), (H, bytes(33))],
)
def test_wrong_sizes_are_refused(handshake_hash: bytes, challenge: bytes | None) -> None:
    with pytest.raises(ValueError):
        channel_attestation_nonce(handshake_hash, attester_is_initiator=True, challenge=challenge)
