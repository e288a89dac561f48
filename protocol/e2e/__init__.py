"""Client <-> inference node, end to end: formats that relays carry but cannot read.

(docs/architecture.md §7 "Client ↔ inference node, end to end", §11.)

A client verifies candidate inference nodes' documents itself, then:

* :func:`seal_request` -- draws a request key and wraps it in a one-way Noise
  ``N`` :class:`RequestEnvelope` to each candidate's attested static key,
  and seals the :class:`RequestBody` under it: a :class:`SealedRequest`
  (``e2e.request``) whose routing fields (model, max tokens, node bindings)
  are authenticated with the ciphertext;
* the node :func:`open_request` with its static key, generates, and answers
  with :class:`ResponseSealer` records under a key of this answer alone
  (:func:`response_key`: a fresh salt of the node's, carried by record 0):
  chunks, then one final record
  (:class:`ResponseFinal`: finish reason, usage, :class:`Receipt`);
* the client's :class:`ResponseOpener` accepts records only in order, once,
  for this request, up to and including a final record whose receipt covers
  exactly this request (:func:`request_digest`) and this response
  (:func:`response_digest`);
* :class:`Receipt` is signed with the node's attested Ed25519 receipt key
  (:func:`sign_receipt`, :func:`verify_receipt`, bound into the node's
  documents by :func:`receipt_key_binding`); a :class:`SavedReceipt` file
  keeps it with the node's document for offline checks.

Every refusal is an :class:`E2EError` whose :attr:`~E2EError.check`
(:class:`E2ECheck`) names the failed check (receipts: :class:`ReceiptError`);
none quotes its input. Sans-IO: entropy is injected, nothing reads a clock.
"""

from protocol.e2e._errors import E2ECheck, E2EError, ReceiptError
from protocol.e2e._receipt import (
    MAX_RECEIPT_BYTES,
    MAX_SAVED_RECEIPT_BYTES,
    RECEIPT_KEY_BINDING_DOMAIN,
    RECEIPT_SIGNATURE_DOMAIN,
    RECEIPT_VERSION,
    Receipt,
    SavedReceipt,
    receipt_key_binding,
    receipt_signed_bytes,
    sign_receipt,
    verify_receipt,
)
from protocol.e2e._request import (
    ENVELOPE_MESSAGE_SIZE,
    MAX_CANDIDATES,
    MAX_REQUEST_CIPHERTEXT,
    MAX_REQUEST_PLAINTEXT,
    MAX_SEALED_REQUEST_BYTES,
    REQUEST_AAD_DOMAIN,
    REQUEST_DIGEST_DOMAIN,
    REQUEST_ENVELOPE_PROTOCOL,
    REQUEST_ID_SIZE,
    REQUEST_KEY_LABEL,
    REQUEST_KEY_SIZE,
    REQUEST_PROLOGUE_DOMAIN,
    RESPONSE_KEY_LABEL,
    RequestBody,
    RequestEnvelope,
    RequestKey,
    SealedRequest,
    open_request,
    request_associated_data,
    request_digest,
    request_prologue,
    seal_request,
)
from protocol.e2e._response import (
    CHUNK_FLAG,
    FINAL_FLAG,
    FIRST_RECORD_HEADER_SIZE,
    MAX_RECORD_BYTES,
    MAX_RECORDS,
    RECORD_HEADER_SIZE,
    RESPONSE_AAD_DOMAIN,
    RESPONSE_DIGEST_DOMAIN,
    RESPONSE_SALT_SIZE,
    ResponseDigest,
    ResponseFinal,
    ResponseOpener,
    ResponseSealer,
    record_is_final,
    response_digest,
    response_key,
)

__all__ = [
    "CHUNK_FLAG",
    "ENVELOPE_MESSAGE_SIZE",
    "FINAL_FLAG",
    "FIRST_RECORD_HEADER_SIZE",
    "MAX_CANDIDATES",
    "MAX_RECEIPT_BYTES",
    "MAX_RECORDS",
    "MAX_RECORD_BYTES",
    "MAX_REQUEST_CIPHERTEXT",
    "MAX_REQUEST_PLAINTEXT",
    "MAX_SAVED_RECEIPT_BYTES",
    "MAX_SEALED_REQUEST_BYTES",
    "RECEIPT_KEY_BINDING_DOMAIN",
    "RECEIPT_SIGNATURE_DOMAIN",
    "RECEIPT_VERSION",
    "RECORD_HEADER_SIZE",
    "REQUEST_AAD_DOMAIN",
    "REQUEST_DIGEST_DOMAIN",
    "REQUEST_ENVELOPE_PROTOCOL",
    "REQUEST_ID_SIZE",
    "REQUEST_KEY_LABEL",
    "REQUEST_KEY_SIZE",
    "REQUEST_PROLOGUE_DOMAIN",
    "RESPONSE_AAD_DOMAIN",
    "RESPONSE_DIGEST_DOMAIN",
    "RESPONSE_KEY_LABEL",
    "RESPONSE_SALT_SIZE",
    "E2ECheck",
    "E2EError",
    "Receipt",
    "ReceiptError",
    "RequestBody",
    "RequestEnvelope",
    "RequestKey",
    "ResponseDigest",
    "ResponseFinal",
    "ResponseOpener",
    "ResponseSealer",
    "SavedReceipt",
    "SealedRequest",
    "open_request",
    "receipt_key_binding",
    "receipt_signed_bytes",
    "record_is_final",
    "request_associated_data",
    "request_digest",
    "request_prologue",
    "response_digest",
    "response_key",
    "seal_request",
    "sign_receipt",
    "verify_receipt",
]
