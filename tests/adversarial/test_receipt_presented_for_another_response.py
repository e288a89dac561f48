"""Attack: a receipt is shown for bytes it was not signed over -- a genuine
receipt kept with another answer's text, another request, or with fields
changed (model, release, request id) -- or is signed by a key the attested
node does not hold, to make a completion look as if an attested node gave it."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from _e2e_kit import answer, node_key, receipt_key, seal

from protocol.attestation import DocumentKind
from protocol.e2e import (
    E2ECheck,
    ReceiptError,
    SavedReceipt,
    receipt_key_binding,
    response_digest,
    verify_receipt,
)

NODE = node_key("attested")


def _genuine() -> tuple[SavedReceipt, bytes]:
    sealed, _, digest = seal([NODE])
    sent = answer(sealed, NODE, signer=receipt_key("attested"))
    saved = SavedReceipt(
        sent.receipt,
        digest,
        response_digest(sent.text, sent.done, salt=sent.salt),
        DocumentKind.NITRO,
        b"doc",
    )
    return saved, receipt_key_binding(sent.receipt.receipt_key)


def test_another_answers_text_is_refused() -> None:
    saved, _ = _genuine()
    other = dataclasses.replace(saved, response_sha256=hashlib.sha256(b"other").digest())
    with pytest.raises(ReceiptError) as refused:
        SavedReceipt.decode(other.encode()).verify_receipt()
    assert refused.value.check is E2ECheck.RECEIPT_RESPONSE


def test_another_request_is_refused() -> None:
    saved, _ = _genuine()
    with pytest.raises(ReceiptError) as refused:
        verify_receipt(
            saved.receipt,
            request_sha256=hashlib.sha256(b"other").digest(),
            response_sha256=saved.response_sha256,
        )
    assert refused.value.check is E2ECheck.RECEIPT_REQUEST


def test_changed_fields_are_refused() -> None:
    saved, _ = _genuine()
    for changed in (
        dataclasses.replace(saved.receipt, model="bigger-model"),
        dataclasses.replace(saved.receipt, release_version=saved.receipt.release_version + 1),
        dataclasses.replace(saved.receipt, request_id=bytes(16)),
    ):
        with pytest.raises(ReceiptError) as refused:
            dataclasses.replace(saved, receipt=changed).verify_receipt()
        assert refused.value.check is E2ECheck.RECEIPT_SIGNATURE


def test_a_receipt_resigned_by_another_key_no_longer_matches_the_document() -> None:
    """A forger can sign with a key of its own, and the signature verifies; what
    fails is the binding, which the attested document carries for the node's key."""
    saved, attested_binding = _genuine()
    sealed, _, digest = seal([NODE])
    sent = answer(sealed, NODE, signer=receipt_key("forger"))
    forged = sent.receipt
    verify_receipt(
        forged,
        request_sha256=digest,
        response_sha256=response_digest(sent.text, sent.done, salt=sent.salt),
    )
    assert receipt_key_binding(forged.receipt_key) != attested_binding
    assert saved.receipt_key_binding() == attested_binding
