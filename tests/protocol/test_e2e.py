"""``protocol.e2e``: a request only its candidate nodes open, an answer stream
only its client opens (in order, whole, for this request), and receipts that
hold only for the bytes they were signed over."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle

import pytest
from _e2e_kit import (
    CANARY,
    MODEL,
    RELEASE_VERSION,
    answer,
    body,
    entropy,
    node_key,
    receipt_key,
    seal,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.attestation import DocumentKind, noise_key_binding
from protocol.customer_data import CustomerData
from protocol.e2e import (
    ENVELOPE_MESSAGE_SIZE,
    FIRST_RECORD_HEADER_SIZE,
    MAX_CANDIDATES,
    RECEIPT_KEY_BINDING_DOMAIN,
    RECORD_HEADER_SIZE,
    REQUEST_ID_SIZE,
    E2ECheck,
    E2EError,
    Receipt,
    ReceiptError,
    RequestBody,
    RequestEnvelope,
    RequestKey,
    ResponseFinal,
    ResponseOpener,
    ResponseSealer,
    SavedReceipt,
    SealedRequest,
    open_request,
    receipt_key_binding,
    record_is_final,
    request_digest,
    response_digest,
    response_key,
    seal_request,
    verify_receipt,
)
from protocol.inference import FinishReason, GenerateChunk, GenerateDone
from protocol.messages import Envelope, encode_envelope

NODES = [node_key(f"n{i}") for i in range(3)]
OUTSIDER = node_key("outsider")


def _refused(check: E2ECheck, error: E2EError) -> None:
    assert error.check is check
    assert CANARY not in str(error)
    assert error.__context__ is None and error.__cause__ is None


def _open_all(records: tuple[bytes, ...] | list[bytes], opener: ResponseOpener) -> str:
    text = ""
    for record in records:
        opened = opener.open(record)
        if isinstance(opened, GenerateChunk):
            text += opened.text.reveal_text()
    return text


# -- requests -------------------------------------------------------------------


def test_every_candidate_opens_the_same_request_and_key() -> None:
    sealed, key, _ = seal(NODES)
    assert len(sealed.envelopes) == len(NODES)
    assert sealed.nodes == {noise_key_binding(node.public) for node in NODES}
    for node in NODES:
        assert sealed.addressed_to(noise_key_binding(node.public))
        request, opened_key = open_request(SealedRequest.decode(sealed.encode()), static=node)
        assert opened_key.matches(key)
        assert request.model == MODEL and request.max_tokens == 64
        assert request == body().to_request(model=MODEL, max_tokens=64)
        assert request.turns[1].content.reveal_text() == CANARY


def test_the_wire_form_holds_no_plaintext() -> None:
    sealed, _, _ = seal(NODES)
    wire = sealed.encode()
    assert CANARY.encode() not in wire
    assert b"be brief" not in wire
    assert all(len(e.message) == ENVELOPE_MESSAGE_SIZE for e in sealed.envelopes)


def test_a_node_not_among_the_candidates_cannot_open() -> None:
    sealed, _, _ = seal(NODES[:2])
    with pytest.raises(E2EError) as refused:
        open_request(sealed, static=OUTSIDER)
    _refused(E2ECheck.NO_ENVELOPE, refused.value)
    assert not sealed.addressed_to(noise_key_binding(NODES[2].public))


def test_an_envelope_relabelled_for_another_node_does_not_open() -> None:
    """The outsider's binding on a candidate's envelope: the prologue names the
    candidate, and the envelope was made for the candidate's key."""
    sealed, _, _ = seal(NODES[:1])
    forged = RequestEnvelope(noise_key_binding(OUTSIDER.public), sealed.envelopes[0].message)
    moved = dataclasses.replace(sealed, envelopes=(forged,))
    with pytest.raises(E2EError) as refused:
        open_request(moved, static=OUTSIDER)
    _refused(E2ECheck.BAD_ENVELOPE, refused.value)


@pytest.mark.parametrize("field", ["request_id", "model", "max_tokens"])
def test_changing_a_routing_field_breaks_the_request(field: str) -> None:
    sealed, _, _ = seal(NODES)
    changed = {
        "request_id": bytes(REQUEST_ID_SIZE),
        "model": "another-model",
        "max_tokens": 8192,
    }[field]
    altered = dataclasses.replace(sealed, **{field: changed})  # type: ignore[arg-type]
    with pytest.raises(E2EError) as refused:
        open_request(altered, static=NODES[0])
    # The prologue binds request id and model; max tokens only the AAD does.
    expected = E2ECheck.BAD_CIPHERTEXT if field == "max_tokens" else E2ECheck.BAD_ENVELOPE
    _refused(expected, refused.value)


def test_an_envelope_moved_to_another_request_does_not_open() -> None:
    first, _, _ = seal(NODES, seed="first")
    second, _, _ = seal(NODES, seed="second", prompt="another prompt")
    spliced = dataclasses.replace(second, envelopes=first.envelopes)
    with pytest.raises(E2EError) as refused:
        open_request(spliced, static=NODES[0])
    _refused(E2ECheck.BAD_ENVELOPE, refused.value)
    # And the first request's ciphertext under the second's envelopes.
    swapped = dataclasses.replace(second, ciphertext=first.ciphertext)
    with pytest.raises(E2EError) as refused:
        open_request(swapped, static=NODES[0])
    _refused(E2ECheck.BAD_CIPHERTEXT, refused.value)


def test_dropping_or_adding_an_envelope_breaks_the_ciphertext() -> None:
    sealed, _, _ = seal(NODES)
    dropped = dataclasses.replace(sealed, envelopes=sealed.envelopes[:1])
    other, _, _ = seal([OUTSIDER], seed="relay")
    added = dataclasses.replace(sealed, envelopes=(*sealed.envelopes, other.envelopes[0]))
    for altered in (dropped, added):
        with pytest.raises(E2EError) as refused:
            open_request(altered, static=NODES[0])
        _refused(E2ECheck.BAD_CIPHERTEXT, refused.value)


@pytest.mark.parametrize("at", [0, 7, -17, -1])
def test_a_flipped_ciphertext_byte_is_refused(at: int) -> None:
    sealed, _, _ = seal(NODES)
    flipped = bytearray(sealed.ciphertext)
    flipped[at] ^= 0x01
    with pytest.raises(E2EError) as refused:
        open_request(dataclasses.replace(sealed, ciphertext=bytes(flipped)), static=NODES[1])
    _refused(E2ECheck.BAD_CIPHERTEXT, refused.value)


def test_a_flipped_envelope_byte_is_refused() -> None:
    sealed, _, _ = seal(NODES[:1])
    message = bytearray(sealed.envelopes[0].message)
    message[40] ^= 0x80
    envelope = RequestEnvelope(sealed.envelopes[0].node, bytes(message))
    with pytest.raises(E2EError) as refused:
        open_request(dataclasses.replace(sealed, envelopes=(envelope,)), static=NODES[0])
    _refused(E2ECheck.BAD_ENVELOPE, refused.value)


def test_a_plaintext_that_is_no_request_body_is_refused() -> None:
    """Sealed correctly, but holding another message: the body check, not a crash."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from protocol.e2e import REQUEST_KEY_LABEL, request_associated_data

    sealed, key, _ = seal(NODES[:1])
    stranger = encode_envelope(Envelope.wrap(GenerateChunk(CustomerData(CANARY), 1)))
    aad = request_associated_data(
        sealed.request_id, sealed.model, sealed.max_tokens, sealed.envelopes
    )
    ciphertext = ChaCha20Poly1305(key.derive(REQUEST_KEY_LABEL, sealed.request_id)).encrypt(
        bytes(12), stranger, aad
    )
    with pytest.raises(E2EError) as refused:
        open_request(dataclasses.replace(sealed, ciphertext=ciphertext), static=NODES[0])
    _refused(E2ECheck.BODY_INVALID, refused.value)


def test_sealing_refuses_bad_candidates_and_parameters() -> None:
    good = body()
    cases: list[tuple[E2ECheck, dict[str, object]]] = [
        (E2ECheck.CANDIDATES, {"candidates": []}),
        (E2ECheck.CANDIDATES, {"candidates": [NODES[0].public] * 2}),
        (E2ECheck.CANDIDATES, {"candidates": [b"\x01" * 31]}),
        (
            E2ECheck.CANDIDATES,
            {"candidates": [node_key(f"c{i}").public for i in range(MAX_CANDIDATES + 1)]},
        ),
        (E2ECheck.CANDIDATES, {"candidates": NODES[0].public}),
        (E2ECheck.REQUEST_PARAMETERS, {"model": ""}),
        (E2ECheck.REQUEST_PARAMETERS, {"model": "m" * 129}),
        (E2ECheck.REQUEST_PARAMETERS, {"max_tokens": 0}),
        (E2ECheck.REQUEST_PARAMETERS, {"max_tokens": 8193}),
    ]
    for check, override in cases:
        arguments: dict[str, object] = {
            "model": MODEL,
            "max_tokens": 16,
            "candidates": [NODES[0].public],
            "entropy": entropy("refused"),
            **override,
        }
        with pytest.raises(E2EError) as refused:
            seal_request(good, **arguments)  # type: ignore[arg-type]
        _refused(check, refused.value)


def test_a_sixteen_node_request_stays_within_its_bounds() -> None:
    many = [node_key(f"m{i}") for i in range(MAX_CANDIDATES)]
    sealed, _, _ = seal(many)
    assert len(SealedRequest.decode(sealed.encode()).envelopes) == MAX_CANDIDATES
    open_request(sealed, static=many[-1])


def test_the_request_key_stays_out_of_reprs_and_pickles() -> None:
    _sealed, key, _ = seal(NODES[:1])
    assert key.reveal().hex() not in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert not key.matches(RequestKey(bytes(32)))
    with pytest.raises(ValueError):
        RequestKey(b"short")


def test_the_request_digest_covers_the_request_id_and_every_field() -> None:
    sealed, _, digest = seal(NODES[:1])
    request, _ = open_request(sealed, static=NODES[0])
    assert request_digest(sealed.request_id, request) == digest
    assert request_digest(bytes(16), request) != digest
    other = dataclasses.replace(request, seed=request.seed + 1)
    assert request_digest(sealed.request_id, other) != digest
    assert RequestBody.of(request) == body()


# -- the response stream -------------------------------------------------------


def test_the_client_reads_the_whole_answer_and_its_receipt() -> None:
    sealed, key, digest = seal(NODES)
    sent = answer(sealed, NODES[2])
    opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    assert _open_all(sent.records, opener) == sent.text
    final = opener.finish()
    assert final.done == sent.done and final.receipt == sent.receipt
    assert final.receipt.model == MODEL
    assert final.receipt.response_sha256 == response_digest(sent.text, sent.done, salt=sent.salt)
    assert all(CANARY.encode() not in record for record in sent.records)


def test_a_truncated_stream_is_refused() -> None:
    sealed, key, digest = seal(NODES)
    sent = answer(sealed, NODES[0])
    opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    _open_all(sent.records[:-1], opener)
    with pytest.raises(E2EError) as refused:
        opener.finish()
    _refused(E2ECheck.MISSING_FINAL, refused.value)
    with pytest.raises(E2EError) as refused:
        opener.open(sent.records[-1])
    _refused(E2ECheck.STREAM_FAILED, refused.value)


def test_a_dropped_chunk_is_refused() -> None:
    sealed, key, digest = seal(NODES)
    sent = answer(sealed, NODES[0])
    opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    opener.open(sent.records[0])
    with pytest.raises(E2EError) as refused:
        opener.open(sent.records[2])
    _refused(E2ECheck.RECORD_OUT_OF_ORDER, refused.value)
    with pytest.raises(E2EError) as refused:
        opener.open(sent.records[1])
    _refused(E2ECheck.STREAM_FAILED, refused.value)


def test_reordered_and_duplicated_records_are_refused() -> None:
    sealed, key, digest = seal(NODES)
    sent = answer(sealed, NODES[0])
    reordered = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    with pytest.raises(E2EError) as refused:
        reordered.open(sent.records[1])
    _refused(E2ECheck.RECORD_OUT_OF_ORDER, refused.value)
    duplicated = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    duplicated.open(sent.records[0])
    with pytest.raises(E2EError) as refused:
        duplicated.open(sent.records[0])
    _refused(E2ECheck.RECORD_REPLAYED, refused.value)


def test_a_record_after_the_final_one_is_refused() -> None:
    sealed, key, digest = seal(NODES)
    sent = answer(sealed, NODES[0])
    opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    _open_all(sent.records, opener)
    with pytest.raises(E2EError) as refused:
        opener.open(sent.records[0])
    _refused(E2ECheck.AFTER_FINAL, refused.value)


def test_records_of_another_request_are_refused() -> None:
    """Another answer to the same client, or one the relay asked for itself."""
    sealed, key, digest = seal(NODES, seed="mine")
    other, _, _ = seal(NODES, seed="other", prompt="something else")
    theirs = answer(other, NODES[0])
    opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    with pytest.raises(E2EError) as refused:
        opener.open(theirs.records[0])
    _refused(E2ECheck.RECORD_FORGED, refused.value)


def test_a_tampered_record_header_or_body_is_refused() -> None:
    sealed, key, digest = seal(NODES)
    sent = answer(sealed, NODES[0], pieces=("one",))
    chunk, _final = sent.records
    as_final = chunk[:8] + b"\x01" + chunk[9:]
    flipped = chunk[:-1] + bytes([chunk[-1] ^ 1])
    for forged in (as_final, flipped):
        opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
        with pytest.raises(E2EError) as refused:
            opener.open(forged)
        _refused(E2ECheck.RECORD_FORGED, refused.value)
    unknown_flag = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    with pytest.raises(E2EError) as refused:
        unknown_flag.open(chunk[:8] + b"\x02" + chunk[9:])
    _refused(E2ECheck.RECORD_MALFORMED, refused.value)


def test_a_final_record_whose_receipt_is_for_other_text_is_refused() -> None:
    """The node (or anyone with the key) signs one text and sends another."""
    sealed, key, digest = seal(NODES)
    request, node_key_ = open_request(sealed, static=NODES[0])
    honest = answer(sealed, NODES[0], pieces=("yes",))
    sealer = ResponseSealer(node_key_, sealed.request_id, salt=bytes(range(32)))
    records = [sealer.seal_chunk(GenerateChunk(CustomerData("no"), 1))]
    records.append(sealer.seal_final(honest.done, honest.receipt))
    opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    opener.open(records[0])
    with pytest.raises(ReceiptError) as refused:
        opener.open(records[1])
    _refused(E2ECheck.RECEIPT_RESPONSE, refused.value)
    assert request.model == MODEL


def test_a_final_record_with_another_requests_receipt_is_refused() -> None:
    sealed, key, digest = seal(NODES, seed="mine")
    other, _, _ = seal(NODES, seed="other")
    theirs = answer(other, NODES[0], pieces=("same",))
    _, node_side = open_request(sealed, static=NODES[0])
    sealer = ResponseSealer(node_side, sealed.request_id, salt=bytes(range(32)))
    records = [
        sealer.seal_chunk(GenerateChunk(CustomerData("same"), 1)),
        sealer.seal_final(theirs.done, theirs.receipt),
    ]
    opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    opener.open(records[0])
    with pytest.raises(ReceiptError) as refused:
        opener.open(records[1])
    _refused(E2ECheck.RECEIPT_REQUEST, refused.value)


def test_the_sealer_refuses_after_the_final_record_and_non_text() -> None:
    sealed, _, _ = seal(NODES[:1])
    _, key = open_request(sealed, static=NODES[0])
    sealer = ResponseSealer(key, sealed.request_id, salt=bytes(range(32)))
    with pytest.raises(E2EError) as refused:
        sealer.seal_chunk(GenerateChunk(CustomerData(b"\xff raw"), 1))
    _refused(E2ECheck.RECORD_CONTENT, refused.value)
    sent = answer(sealed, NODES[0], pieces=())
    done = GenerateDone(FinishReason.LENGTH, 0, 1)
    sealer.seal_final(done, sent.receipt)
    with pytest.raises(E2EError) as refused:
        sealer.seal_chunk(GenerateChunk(CustomerData("late"), 1))
    _refused(E2ECheck.AFTER_FINAL, refused.value)
    assert sealer.records_sealed == 1


def test_directions_use_different_keys() -> None:
    """A request's ciphertext is never a valid response record, nor the reverse."""
    from protocol.e2e import REQUEST_KEY_LABEL, RESPONSE_KEY_LABEL

    _, key, _ = seal(NODES[:1])
    request_id = bytes(16)
    assert key.derive(REQUEST_KEY_LABEL, request_id) != key.derive(RESPONSE_KEY_LABEL, request_id)
    assert key.derive(RESPONSE_KEY_LABEL, request_id) != key.derive(
        RESPONSE_KEY_LABEL, b"\x01" * 16
    )


def test_an_empty_answer_still_ends_with_its_receipt() -> None:
    sealed, key, digest = seal(NODES)
    sent = answer(sealed, NODES[1], pieces=())
    opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    final = opener.open(sent.records[0])
    assert isinstance(final, ResponseFinal)
    assert opener.finish() is final


# -- receipts ---------------------------------------------------------------------


def _receipt() -> tuple[Receipt, bytes, bytes]:
    sealed, _, digest = seal(NODES)
    sent = answer(sealed, NODES[0])
    return sent.receipt, digest, response_digest(sent.text, sent.done, salt=sent.salt)


def test_a_receipt_verifies_for_its_own_bytes_only() -> None:
    receipt, request_sha, response_sha = _receipt()
    verify_receipt(receipt, request_sha256=request_sha, response_sha256=response_sha)
    assert Receipt.decode(receipt.encode()) == receipt
    other = hashlib.sha256(b"other").digest()
    for check, arguments in (
        (E2ECheck.RECEIPT_REQUEST, {"request_sha256": other, "response_sha256": response_sha}),
        (E2ECheck.RECEIPT_RESPONSE, {"request_sha256": request_sha, "response_sha256": other}),
    ):
        with pytest.raises(ReceiptError) as refused:
            verify_receipt(receipt, **arguments)
        _refused(check, refused.value)


@pytest.mark.parametrize(
    "field", ["request_id", "model", "model_sha384", "release_version", "receipt_key", "signature"]
)
def test_a_receipt_with_any_field_changed_is_refused(field: str) -> None:
    receipt, request_sha, response_sha = _receipt()
    stranger = receipt_key("stranger").public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    changed: object = {
        "request_id": bytes(16),
        "model": "another-model",
        "model_sha384": bytes(48),
        "release_version": RELEASE_VERSION + 1,
        "receipt_key": stranger,
        "signature": bytes(64),
    }[field]
    altered = dataclasses.replace(receipt, **{field: changed})  # type: ignore[arg-type]
    with pytest.raises(ReceiptError) as refused:
        verify_receipt(altered, request_sha256=request_sha, response_sha256=response_sha)
    _refused(E2ECheck.RECEIPT_SIGNATURE, refused.value)


def test_a_receipt_of_an_unknown_version_is_refused() -> None:
    receipt, request_sha, response_sha = _receipt()
    with pytest.raises(ReceiptError) as refused:
        verify_receipt(
            dataclasses.replace(receipt, version=2),
            request_sha256=request_sha,
            response_sha256=response_sha,
        )
    _refused(E2ECheck.RECEIPT_VERSION, refused.value)


def test_the_receipt_key_binding_is_domain_separated() -> None:
    public = receipt_key("node").public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert (
        receipt_key_binding(public) == hashlib.sha256(RECEIPT_KEY_BINDING_DOMAIN + public).digest()
    )
    assert receipt_key_binding(public) != noise_key_binding(public)
    with pytest.raises(ValueError):
        receipt_key_binding(public[:31])


def test_a_saved_receipt_round_trips_and_verifies_offline() -> None:
    receipt, request_sha, response_sha = _receipt()
    saved = SavedReceipt(receipt, request_sha, response_sha, DocumentKind.NITRO, b"\x84document")
    loaded = SavedReceipt.decode(saved.encode())
    assert loaded == saved
    loaded.verify_receipt()
    assert loaded.receipt_key_binding() == receipt_key_binding(receipt.receipt_key)
    wrong = dataclasses.replace(saved, response_sha256=hashlib.sha256(b"x").digest())
    with pytest.raises(ReceiptError) as refused:
        SavedReceipt.decode(wrong.encode()).verify_receipt()
    _refused(E2ECheck.RECEIPT_RESPONSE, refused.value)
    with pytest.raises(ReceiptError) as refused:
        SavedReceipt.decode(receipt.encode())
    _refused(E2ECheck.RECEIPT_MALFORMED, refused.value)
    with pytest.raises(ReceiptError) as refused:
        Receipt.decode(saved.encode())
    _refused(E2ECheck.RECEIPT_MALFORMED, refused.value)


def test_the_response_digest_separates_salt_text_and_usage() -> None:
    done = GenerateDone(FinishReason.STOP, 2, 3)
    salt = bytes(32)
    assert response_digest("ab", done, salt=salt) != response_digest("a", done, salt=salt)
    assert response_digest("ab", done, salt=salt) != response_digest(
        "ab", GenerateDone(FinishReason.STOP, 2, 4), salt=salt
    )
    assert response_digest("ab", done, salt=salt) != response_digest(
        "ab", GenerateDone(FinishReason.LENGTH, 2, 3), salt=salt
    )
    assert response_digest("ab", done, salt=salt) != response_digest("ab", done, salt=b"\x01" * 32)


def test_two_answers_to_one_request_never_share_a_key_or_nonce() -> None:
    """A request answered twice (replayed to another candidate) is answered
    under two keys: the same counters never meet the same key."""
    sealed, key, digest = seal(NODES)
    first = answer(sealed, NODES[0], pieces=("same", "text"), salt=b"\x01" * 32)
    second = answer(sealed, NODES[1], pieces=("same", "text"), salt=b"\x02" * 32)
    assert response_key(key, sealed.request_id, first.salt) != response_key(
        key, sealed.request_id, second.salt
    )
    # Same plaintext, same counter, yet nothing of the ciphertexts repeats.
    for mine, theirs in zip(first.records, second.records, strict=True):
        assert mine[FIRST_RECORD_HEADER_SIZE:] != theirs[FIRST_RECORD_HEADER_SIZE:]
        assert mine[-16:] != theirs[-16:]
    assert first.receipt.response_sha256 != second.receipt.response_sha256
    # Each opens on its own; records of one do not continue the other.
    for sent in (first, second):
        opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
        assert _open_all(sent.records, opener) == "sametext"
        assert opener.salt == sent.salt
    mixed = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    mixed.open(first.records[0])
    with pytest.raises(E2EError) as refused:
        mixed.open(second.records[1])
    _refused(E2ECheck.RECORD_FORGED, refused.value)


def test_record_zero_carries_the_salt_authenticated() -> None:
    sealed, key, digest = seal(NODES)
    sent = answer(sealed, NODES[0], pieces=("one", "one"))
    first = sent.records[0]
    assert first[RECORD_HEADER_SIZE:FIRST_RECORD_HEADER_SIZE] == sent.salt
    # Only record 0 carries it.
    assert len(first) == len(sent.records[1]) + FIRST_RECORD_HEADER_SIZE - RECORD_HEADER_SIZE
    other_salt = first[:RECORD_HEADER_SIZE] + bytes(32) + first[FIRST_RECORD_HEADER_SIZE:]
    opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    with pytest.raises(E2EError) as refused:
        opener.open(other_salt)
    _refused(E2ECheck.RECORD_FORGED, refused.value)
    short = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    with pytest.raises(E2EError) as refused:
        short.open(first[: RECORD_HEADER_SIZE + 20])
    _refused(E2ECheck.RECORD_MALFORMED, refused.value)
    with pytest.raises(ValueError):
        ResponseSealer(key, sealed.request_id, salt=bytes(31))


def test_record_is_final_reads_the_flag_and_refuses_malformed_records() -> None:
    sealed, _, _ = seal(NODES)
    sent = answer(sealed, NODES[0], pieces=("one",))
    assert [record_is_final(r) for r in sent.records] == [False, True]
    for malformed in (b"", sent.records[0][:8] + b"\x07" + sent.records[0][9:], bytes(24)):
        with pytest.raises(E2EError) as refused:
            record_is_final(malformed)
        _refused(E2ECheck.RECORD_MALFORMED, refused.value)
