"""Attack: a relay keeps the client's envelopes and ciphertext but changes what
routing sees -- another model (one that echoes its prompt, say), a larger
max_tokens, another request id -- or moves the envelopes onto another of the
client's requests, so that the node opens the request in a context the
client did not ask for."""

from __future__ import annotations

import dataclasses

import pytest
from _e2e_kit import CANARY, node_key, seal

from protocol.e2e import E2ECheck, E2EError, SealedRequest, open_request

NODE = node_key("attested")


def _refused(sealed: SealedRequest, check: E2ECheck) -> None:
    with pytest.raises(E2EError) as refused:
        open_request(sealed, static=NODE)
    assert refused.value.check is check
    assert CANARY not in str(refused.value)


def test_another_model_is_refused() -> None:
    sealed, _, _ = seal([NODE])
    _refused(dataclasses.replace(sealed, model="echo-model"), E2ECheck.BAD_ENVELOPE)


def test_a_larger_max_tokens_is_refused() -> None:
    sealed, _, _ = seal([NODE], max_tokens=16)
    _refused(dataclasses.replace(sealed, max_tokens=8192), E2ECheck.BAD_CIPHERTEXT)


def test_another_request_id_is_refused() -> None:
    sealed, _, _ = seal([NODE])
    _refused(dataclasses.replace(sealed, request_id=bytes(16)), E2ECheck.BAD_ENVELOPE)


def test_envelopes_moved_onto_another_request_are_refused() -> None:
    first, _, _ = seal([NODE], seed="first")
    second, _, _ = seal([NODE], seed="second", model="other-model")
    _refused(dataclasses.replace(second, envelopes=first.envelopes), E2ECheck.BAD_ENVELOPE)
    _refused(dataclasses.replace(first, ciphertext=second.ciphertext), E2ECheck.BAD_CIPHERTEXT)
