"""End-to-end format errors. Each names the check that failed; none carries a
key, a record's bytes or anything else of its input."""

from __future__ import annotations

import enum


class E2ECheck(enum.StrEnum):
    """What an end-to-end check found wrong (the :attr:`E2EError.check`).

    Dotted names, grouped by what they check; values are stable (the client,
    the worker and tests compare them as strings).
    """

    # -- sealing a request (caller errors, refused before anything is drawn)
    #: No candidate node, more than 16, a key that is not 32 bytes, or the
    #: same node twice.
    CANDIDATES = "request.candidates"
    #: The model or max_tokens is out of range, or the body is too large.
    REQUEST_PARAMETERS = "request.parameters"

    # -- opening a request (the inference node)
    #: Not the canonical encoding of an ``e2e.request``, or a field out of range.
    REQUEST_MALFORMED = "request.malformed"
    #: No envelope names this node's key binding: the request was sealed for
    #: other nodes (or its envelope was stripped).
    NO_ENVELOPE = "request.no_envelope"
    #: The envelope naming this node does not open with its static key in this
    #: request's context (another request, model or node, or tampered).
    BAD_ENVELOPE = "request.bad_envelope"
    #: The ciphertext does not authenticate under the request key with this
    #: request's fields as associated data (tampered, or fields changed).
    BAD_CIPHERTEXT = "request.bad_ciphertext"
    #: The plaintext is not a valid request body (wrong encoding, out of the
    #: limits of :mod:`protocol.inference`).
    BODY_INVALID = "request.body_invalid"

    # -- the response stream (the client's opener; the node's sealer)
    #: A record too short, too long, or with an unknown flag.
    RECORD_MALFORMED = "response.record_malformed"
    #: A record whose counter is below the next expected one: a duplicate or
    #: a replay within this stream.
    RECORD_REPLAYED = "response.record_replayed"
    #: A record whose counter is above the next expected one: a record before
    #: it was dropped, or the stream was reordered.
    RECORD_OUT_OF_ORDER = "response.record_out_of_order"
    #: A record that does not authenticate under this request's response key
    #: with its header as associated data: tampered, or another request's.
    RECORD_FORGED = "response.record_forged"
    #: A record that authenticates but does not hold a chunk (for a chunk
    #: record) or a final record (for a final one), or a chunk that is not text.
    RECORD_CONTENT = "response.record_content"
    #: A record after the final record.
    AFTER_FINAL = "response.after_final"
    #: The stream ended without its final record (truncated).
    MISSING_FINAL = "response.missing_final"
    #: An earlier record of this stream failed a check; the stream is dead.
    STREAM_FAILED = "response.stream_failed"
    #: The stream cannot go on: too many records, or a record too large to seal.
    STREAM_LIMIT = "response.stream_limit"

    # -- receipts
    #: Not the canonical encoding of a receipt or a saved receipt file, or a
    #: field of the wrong size.
    RECEIPT_MALFORMED = "receipt.malformed"
    #: A receipt format version this code does not know.
    RECEIPT_VERSION = "receipt.version"
    #: The receipt is for another request (its request id or request hash
    #: differs from the one the verifier holds).
    RECEIPT_REQUEST = "receipt.request"
    #: The receipt is for another response (its response hash differs).
    RECEIPT_RESPONSE = "receipt.response"
    #: The signature does not verify under the receipt key (or the key is not
    #: an Ed25519 public key).
    RECEIPT_SIGNATURE = "receipt.signature"


class E2EError(Exception):
    """An end-to-end request, response record or receipt was refused, or could
    not be sealed; :attr:`check` names what failed. Never quotes its input."""

    def __init__(self, check: E2ECheck, detail: str = "") -> None:
        self.check = check
        self.detail = detail
        super().__init__(
            f"end-to-end check failed [{check.value}]" + (f": {detail}" if detail else "")
        )


class ReceiptError(E2EError):
    """A receipt (or a saved receipt file) was refused; :attr:`check` is one of
    the ``receipt.*`` checks."""
