"""Receipts: the serving node's signed statement of what it answered, and with what.

An inference node holds an Ed25519 *receipt key* born in memory at boot; the
binding of its public half (:func:`receipt_key_binding`) is the ``user_data``
of every document the node makes, so a client that verified the document
knows the key is held by attested code. Each completion ends with a
:class:`Receipt` over the request (``request_sha256``,
:func:`~protocol.e2e.request_digest`), the response (``response_sha256``,
:func:`~protocol.e2e.response_digest`), the model and its release's digest
and version. Signed bytes: ``"mantle/receipt/v1\\0"`` then msgpack of every
field but the signature, in order.

A :class:`SavedReceipt` is the file a client keeps: the receipt, the request
and response hashes the client computed itself, and the serving node's
attestation document and its kind, so the receipt can be checked offline
(``mantle receipt verify FILE``): the signature and hashes here
(:meth:`SavedReceipt.verify_receipt`), the document against the pins
(``expected_user_data`` = :meth:`SavedReceipt.receipt_key_binding`) by the
client. It holds hashes only, never the prompt or the completion.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
from typing import Annotated, Final

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.attestation import MAX_EVIDENCE_BYTES, DocumentKind
from protocol.e2e._errors import E2ECheck, ReceiptError
from protocol.e2e._request import MAX_MODEL_LEN, REQUEST_ID_SIZE
from protocol.messages import (
    U8,
    U64,
    Envelope,
    MaxLen,
    MessageError,
    decode_envelope,
    encode_envelope,
    message,
)

RECEIPT_VERSION: Final = 1
RECEIPT_SIGNATURE_DOMAIN: Final = b"mantle/receipt/v1\x00"
RECEIPT_KEY_BINDING_DOMAIN: Final = b"mantle/receipt-key/v1\x00"
SHA256_SIZE: Final = 32
SHA384_SIZE: Final = 48
RECEIPT_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
#: An encoded receipt is well below this; a saved receipt adds the document.
MAX_RECEIPT_BYTES: Final = 1024
MAX_SAVED_RECEIPT_BYTES: Final = MAX_RECEIPT_BYTES + MAX_EVIDENCE_BYTES + 256

_SIZES: Final = (
    ("request_id", REQUEST_ID_SIZE),
    ("request_sha256", SHA256_SIZE),
    ("response_sha256", SHA256_SIZE),
    ("model_sha384", SHA384_SIZE),
    ("receipt_key", RECEIPT_KEY_SIZE),
    ("signature", SIGNATURE_SIZE),
)


def receipt_key_binding(ed25519_public: bytes) -> bytes:
    """``SHA-256("mantle/receipt-key/v1\\0" || key)``: what an inference node's
    documents carry in ``user_data`` for its receipt key (32 raw bytes)."""
    if type(ed25519_public) is not bytes or len(ed25519_public) != RECEIPT_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {RECEIPT_KEY_SIZE} bytes")
    return hashlib.sha256(RECEIPT_KEY_BINDING_DOMAIN + ed25519_public).digest()


@message("e2e.receipt")
@dataclasses.dataclass(frozen=True, slots=True)
class Receipt:
    """What the serving node signs at the end of a completion."""

    version: U8
    request_id: Annotated[bytes, MaxLen(REQUEST_ID_SIZE)]
    #: :func:`~protocol.e2e.request_digest` of the request the node opened.
    request_sha256: Annotated[bytes, MaxLen(SHA256_SIZE)]
    #: :func:`~protocol.e2e.response_digest` of the text, finish reason and usage it sent.
    response_sha256: Annotated[bytes, MaxLen(SHA256_SIZE)]
    model: Annotated[str, MaxLen(MAX_MODEL_LEN)]
    #: The model digest the release names for ``model``.
    model_sha384: Annotated[bytes, MaxLen(SHA384_SIZE)]
    #: The version of the release the node booted.
    release_version: U64
    #: The node's Ed25519 receipt public key (raw, 32 bytes).
    receipt_key: Annotated[bytes, MaxLen(RECEIPT_KEY_SIZE)]
    signature: Annotated[bytes, MaxLen(SIGNATURE_SIZE)]

    def __post_init__(self) -> None:
        for name, size in _SIZES:
            if len(getattr(self, name)) != size:
                raise ValueError(f"a receipt's {name} is {size} bytes")

    def signed_bytes(self) -> bytes:
        """What the signature covers: the domain, then msgpack of every field
        but the signature, in declaration order."""
        return receipt_signed_bytes(
            version=self.version,
            request_id=self.request_id,
            request_sha256=self.request_sha256,
            response_sha256=self.response_sha256,
            model=self.model,
            model_sha384=self.model_sha384,
            release_version=self.release_version,
            receipt_key=self.receipt_key,
        )

    def encode(self) -> bytes:
        """The canonical encoding (an ``e2e.receipt`` message envelope)."""
        return encode_envelope(Envelope.wrap(self), max_size=MAX_RECEIPT_BYTES)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Receipt:
        """Parse untrusted bytes; :class:`ReceiptError` (``receipt.malformed``)."""
        body: object = None
        with contextlib.suppress(MessageError):
            body = decode_envelope(data, max_size=MAX_RECEIPT_BYTES).body
        if not isinstance(body, Receipt):
            raise ReceiptError(E2ECheck.RECEIPT_MALFORMED, "not an e2e.receipt message")
        return body


def receipt_signed_bytes(
    *,
    version: int,
    request_id: bytes,
    request_sha256: bytes,
    response_sha256: bytes,
    model: str,
    model_sha384: bytes,
    release_version: int,
    receipt_key: bytes,
) -> bytes:
    """See :meth:`Receipt.signed_bytes`."""
    packed: bytes = msgpack.packb(
        [
            version,
            request_id,
            request_sha256,
            response_sha256,
            model,
            model_sha384,
            release_version,
            receipt_key,
        ],
        use_bin_type=True,
    )
    return RECEIPT_SIGNATURE_DOMAIN + packed


def sign_receipt(
    signing_key: Ed25519PrivateKey,
    *,
    request_id: bytes,
    request_sha256: bytes,
    response_sha256: bytes,
    model: str,
    model_sha384: bytes,
    release_version: int,
) -> Receipt:
    """A receipt signed by ``signing_key`` (the node's in-memory receipt key).

    Ed25519 signing is deterministic: nothing is drawn. :class:`ValueError`
    for fields out of range (a caller bug, not input).
    """
    receipt_key = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    unsigned = Receipt(  # checks the sizes
        version=RECEIPT_VERSION,
        request_id=request_id,
        request_sha256=request_sha256,
        response_sha256=response_sha256,
        model=model,
        model_sha384=model_sha384,
        release_version=release_version,
        receipt_key=receipt_key,
        signature=bytes(SIGNATURE_SIZE),
    )
    if not 0 < len(model) <= MAX_MODEL_LEN or not 0 <= release_version < 1 << 64:
        raise ValueError("a receipt names a model and a release version in range")
    signature = signing_key.sign(unsigned.signed_bytes())
    return dataclasses.replace(unsigned, signature=signature)


def verify_receipt(receipt: Receipt, *, request_sha256: bytes, response_sha256: bytes) -> None:
    """Check ``receipt`` is a valid signature by its receipt key over this
    request and this response; :class:`ReceiptError` naming the check if not.

    Whether the receipt key is an attested node's is the caller's check: the
    ``user_data`` of the node's verified document must be
    :func:`receipt_key_binding` of ``receipt.receipt_key``.
    """
    if not isinstance(receipt, Receipt):
        raise ReceiptError(E2ECheck.RECEIPT_MALFORMED, "not a Receipt")
    if receipt.version != RECEIPT_VERSION:
        raise ReceiptError(E2ECheck.RECEIPT_VERSION, f"receipt version {RECEIPT_VERSION} only")
    if not hmac.compare_digest(receipt.request_sha256, request_sha256):
        raise ReceiptError(E2ECheck.RECEIPT_REQUEST, "the receipt is for another request")
    if not hmac.compare_digest(receipt.response_sha256, response_sha256):
        raise ReceiptError(E2ECheck.RECEIPT_RESPONSE, "the receipt is for another response")
    valid = False
    try:
        public = Ed25519PublicKey.from_public_bytes(receipt.receipt_key)
        public.verify(receipt.signature, receipt.signed_bytes())
        valid = True
    except (InvalidSignature, ValueError):
        pass
    if not valid:
        raise ReceiptError(E2ECheck.RECEIPT_SIGNATURE, "the signature does not verify")


@message("e2e.saved_receipt")
@dataclasses.dataclass(frozen=True, slots=True)
class SavedReceipt:
    """A receipt file: the receipt, the hashes the client computed of what it
    sent and received, and the serving node's attestation document.

    The file is :meth:`encode`'s output (an ``e2e.saved_receipt`` message
    envelope: versioned, canonical, msgpack).
    """

    receipt: Receipt
    request_sha256: Annotated[bytes, MaxLen(SHA256_SIZE)]
    response_sha256: Annotated[bytes, MaxLen(SHA256_SIZE)]
    document_kind: DocumentKind
    document: Annotated[bytes, MaxLen(MAX_EVIDENCE_BYTES)]

    def __post_init__(self) -> None:
        if len(self.request_sha256) != SHA256_SIZE or len(self.response_sha256) != SHA256_SIZE:
            raise ValueError(f"the hashes are {SHA256_SIZE} bytes")
        if not self.document:
            raise ValueError("a saved receipt carries the node's document")

    def verify_receipt(self) -> None:
        """The receipt's signature and hashes (:func:`verify_receipt`)."""
        verify_receipt(
            self.receipt, request_sha256=self.request_sha256, response_sha256=self.response_sha256
        )

    def receipt_key_binding(self) -> bytes:
        """What the document's ``user_data`` must be for the receipt to count."""
        return receipt_key_binding(self.receipt.receipt_key)

    def encode(self) -> bytes:
        return encode_envelope(Envelope.wrap(self), max_size=MAX_SAVED_RECEIPT_BYTES)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> SavedReceipt:
        """Parse an untrusted file; :class:`ReceiptError` (``receipt.malformed``)."""
        body: object = None
        with contextlib.suppress(MessageError):
            body = decode_envelope(data, max_size=MAX_SAVED_RECEIPT_BYTES).body
        if not isinstance(body, SavedReceipt):
            raise ReceiptError(E2ECheck.RECEIPT_MALFORMED, "not a saved receipt file")
        return body
