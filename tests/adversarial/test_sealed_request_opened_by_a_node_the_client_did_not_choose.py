"""Attack: the scheduler (or the operator's own node, holding a key it made
up) is handed a sealed request the client wrapped for other nodes, and tries
to open it: with its own key, by relabelling a candidate's envelope with its
key binding, or by adding an envelope of its own next to the client's."""

from __future__ import annotations

import dataclasses

import pytest
from _e2e_kit import CANARY, entropy, node_key, seal

from protocol.attestation import noise_key_binding
from protocol.e2e import (
    REQUEST_ENVELOPE_PROTOCOL,
    E2ECheck,
    E2EError,
    RequestEnvelope,
    open_request,
    request_prologue,
)
from protocol.noise import HandshakeState

CHOSEN = [node_key("attested-a"), node_key("attested-b")]
OPERATORS = node_key("operators-node")


def _refused(sealed: object, check: E2ECheck) -> None:
    with pytest.raises(E2EError) as refused:
        open_request(sealed, static=OPERATORS)  # type: ignore[arg-type]
    assert refused.value.check is check
    assert CANARY not in str(refused.value)


def test_the_operators_node_finds_no_envelope() -> None:
    sealed, _, _ = seal(CHOSEN)
    _refused(sealed, E2ECheck.NO_ENVELOPE)


def test_a_candidates_envelope_relabelled_for_the_operators_node_does_not_open() -> None:
    sealed, _, _ = seal(CHOSEN)
    relabelled = tuple(
        RequestEnvelope(noise_key_binding(OPERATORS.public), e.message) if i == 0 else e
        for i, e in enumerate(sealed.envelopes)
    )
    _refused(dataclasses.replace(sealed, envelopes=relabelled), E2ECheck.BAD_ENVELOPE)


def test_an_envelope_of_its_own_added_beside_the_clients_does_not_open_the_body() -> None:
    """Its envelope opens (it sealed it), but the body is under the client's key,
    and the envelopes are part of the ciphertext's associated data."""
    sealed, _, _ = seal(CHOSEN)
    binding = noise_key_binding(OPERATORS.public)
    handshake = HandshakeState(
        REQUEST_ENVELOPE_PROTOCOL,
        initiator=True,
        prologue=request_prologue(sealed.request_id, sealed.model, binding),
        remote_static=OPERATORS.public,
        entropy=entropy("operator"),
    )
    own = RequestEnvelope(binding, handshake.write_message(bytes(range(32))))
    widened = dataclasses.replace(sealed, envelopes=(*sealed.envelopes, own))
    _refused(widened, E2ECheck.BAD_CIPHERTEXT)
