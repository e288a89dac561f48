"""The answer stream: records only the client that chose the request key can read.

The serving node draws a fresh 32-byte *response salt* for every answer and
seals each chunk, and then one final record (finish reason, usage, receipt),
with ChaCha20-Poly1305 under the response key ``HKDF-SHA256(request key,
salt = request_id || response salt, info =``
:data:`~protocol.e2e.RESPONSE_KEY_LABEL` ``)``. The request's own key is
another label, so the two directions never share a key, and the salt makes
every answer's key its own: a sealed request replayed and answered twice
(after an ingress restart, on another candidate node) is answered under two
keys, never reusing a key and record counter (a nonce). A record on the
wire is::

    counter (u64 BE) || flag (u8: 0 chunk, 1 final) [|| salt (32), record 0 only]
        || AEAD ciphertext

with nonce ``0x00000000 || counter`` and AAD ``"mantle/e2e-response/v1\\0" ||
request_id || header`` (the header as above, the salt included in the clear
and authenticated; a changed salt derives another key as well). Chunks are
``inference.chunk`` messages, the final record an ``e2e.final`` message
(canonical encodings). The receipt's response digest covers the salt too, so
a receipt names one answer, not one request.

The opener (:class:`ResponseOpener`) accepts counters 0, 1, 2, ... in order
and nothing after the final record: a dropped, reordered or duplicated
record, another request's record, a record after the final one, and a stream
that ends without one (:meth:`ResponseOpener.finish`) are each a typed
:class:`~protocol.e2e.E2EError`; after the first, the opener refuses
everything (``response.stream_failed``). The final record's receipt must be
for this request and for exactly the salt, text and usage the stream carried.

Relays see how many records there are, how long each is, and which one is
final (:func:`record_is_final`, the flag in the clear).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import struct
from typing import Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from protocol.e2e._errors import E2ECheck, E2EError, ReceiptError
from protocol.e2e._receipt import Receipt, verify_receipt
from protocol.e2e._request import REQUEST_ID_SIZE, RESPONSE_KEY_LABEL, TAG_SIZE, RequestKey
from protocol.inference import GenerateChunk, GenerateDone
from protocol.messages import (
    Envelope,
    MessageError,
    decode_envelope,
    encode_envelope,
    message,
)

RESPONSE_AAD_DOMAIN: Final = b"mantle/e2e-response/v1\x00"
RESPONSE_DIGEST_DOMAIN: Final = b"mantle/e2e-response-digest/v1\x00"
#: ``counter (8) || flag (1)``.
RECORD_HEADER_SIZE: Final = 9
#: The serving node's fresh salt of one answer (record 0 carries it).
RESPONSE_SALT_SIZE: Final = 32
#: Record 0's header: ``counter (8) || flag (1) || salt (32)``.
FIRST_RECORD_HEADER_SIZE: Final = RECORD_HEADER_SIZE + RESPONSE_SALT_SIZE
CHUNK_FLAG: Final = 0
FINAL_FLAG: Final = 1
#: The largest record plaintext (an ``inference.chunk`` of 64 Ki characters
#: of up to 4 UTF-8 bytes each, with room for its envelope).
MAX_RECORD_PLAINTEXT: Final = 4 * 64 * 1024 + 1024
#: The largest record on the wire (what a relay may bound one record by).
MAX_RECORD_BYTES: Final = FIRST_RECORD_HEADER_SIZE + MAX_RECORD_PLAINTEXT + TAG_SIZE
#: A stream has at most this many records (far above max_tokens' 8192 + 1).
MAX_RECORDS: Final = 1 << 20

_HEADER: Final = struct.Struct(">QB")
_NONCE_PREFIX: Final = bytes(4)


@message("e2e.final")
@dataclasses.dataclass(frozen=True, slots=True)
class ResponseFinal:
    """The last record of an answer: why it ended, its usage, and the receipt."""

    done: GenerateDone
    receipt: Receipt


class ResponseDigest:
    """The running :func:`response_digest` of a stream's text.

    ``SHA-256(domain || response salt || SHA-256(text as UTF-8) || msgpack
    [finish_reason, prompt_tokens, completion_tokens])``: the text is hashed
    as it streams, the usage once it is known.
    """

    __slots__ = ("_salt", "_text")

    def __init__(self, salt: bytes) -> None:
        _check_salt(salt)
        self._salt = salt
        self._text = hashlib.sha256()

    def add(self, text: str) -> None:
        self._text.update(text.encode("utf-8", "surrogatepass"))

    def digest(self, done: GenerateDone) -> bytes:
        usage: bytes = msgpack.packb(
            [done.finish_reason.value, done.prompt_tokens, done.completion_tokens],
            use_bin_type=True,
        )
        return hashlib.sha256(
            RESPONSE_DIGEST_DOMAIN + self._salt + self._text.digest() + usage
        ).digest()


def response_digest(text: str, done: GenerateDone, *, salt: bytes) -> bytes:
    """What a receipt's ``response_sha256`` is for the answer salted with
    ``salt``, its whole text and ``done``."""
    running = ResponseDigest(salt)
    running.add(text)
    return running.digest(done)


def _check_salt(salt: bytes) -> None:
    if type(salt) is not bytes or len(salt) != RESPONSE_SALT_SIZE:
        raise ValueError(f"a response salt is {RESPONSE_SALT_SIZE} bytes")


def _check_request(request_key: RequestKey, request_id: bytes) -> None:
    if type(request_id) is not bytes or len(request_id) != REQUEST_ID_SIZE:
        raise ValueError(f"a request id is {REQUEST_ID_SIZE} bytes")
    if not isinstance(request_key, RequestKey):
        raise TypeError("a RequestKey")


def response_key(request_key: RequestKey, request_id: bytes, salt: bytes) -> bytes:
    """The key of one answer: ``HKDF-SHA256(request key, salt = request_id ||
    response salt, info = RESPONSE_KEY_LABEL)``."""
    _check_request(request_key, request_id)
    _check_salt(salt)
    return request_key.derive(RESPONSE_KEY_LABEL, request_id + salt)


def record_is_final(record: bytes | bytearray | memoryview) -> bool:
    """Whether ``record`` says it is an answer's final record (its flag, in
    the clear): what a relay ends a stream by. :class:`E2EError`
    (``response.record_malformed``) for a record too short to carry a
    header and tag, or an unknown flag. Authenticated only by the opener."""
    if not isinstance(record, bytes | bytearray | memoryview):
        raise E2EError(E2ECheck.RECORD_MALFORMED, "a record is bytes")
    if not RECORD_HEADER_SIZE + TAG_SIZE <= len(record) <= MAX_RECORD_BYTES:
        raise E2EError(E2ECheck.RECORD_MALFORMED, "a record's size is out of range")
    flag = record[8]
    if flag not in (CHUNK_FLAG, FINAL_FLAG):
        raise E2EError(E2ECheck.RECORD_MALFORMED, "unknown record flag")
    return flag == FINAL_FLAG


def _associated_data(request_id: bytes, header: bytes) -> bytes:
    return RESPONSE_AAD_DOMAIN + request_id + header


class ResponseSealer:
    """The serving node's side: seals chunks in order, then the final record.

    ``salt`` is :data:`RESPONSE_SALT_SIZE` fresh random bytes the node draws
    for this answer alone (never reused: two answers to one request must not
    share a key). :meth:`response_sha256` gives what the receipt signs for
    the chunks sealed so far; :meth:`seal_final` ends the stream (nothing may
    follow).
    """

    __slots__ = ("_aead", "_counter", "_digest", "_finished", "_request_id", "_salt")

    def __init__(self, request_key: RequestKey, request_id: bytes, *, salt: bytes) -> None:
        self._aead = ChaCha20Poly1305(response_key(request_key, request_id, salt))
        self._request_id = request_id
        self._salt = salt
        self._counter = 0
        self._digest = ResponseDigest(salt)
        self._finished = False

    @property
    def salt(self) -> bytes:
        """This answer's response salt (record 0 carries it)."""
        return self._salt

    @property
    def records_sealed(self) -> int:
        return self._counter

    def seal_chunk(self, chunk: GenerateChunk) -> bytes:
        """One chunk record. :class:`E2EError` (``response.record_content``
        for a chunk that is not text, ``response.after_final``,
        ``response.stream_limit``)."""
        if not isinstance(chunk, GenerateChunk) or not chunk.text.is_text:
            raise E2EError(E2ECheck.RECORD_CONTENT, "a chunk record holds text")
        plaintext = self._encode(chunk)
        record = self._seal(CHUNK_FLAG, plaintext)
        self._digest.add(chunk.text.reveal_text())
        return record

    def response_sha256(self, done: GenerateDone) -> bytes:
        """The response digest of the chunks sealed so far and ``done``."""
        return self._digest.digest(done)

    def seal_final(self, done: GenerateDone, receipt: Receipt) -> bytes:
        """The final record; the stream ends with it."""
        if not isinstance(done, GenerateDone) or not isinstance(receipt, Receipt):
            raise E2EError(E2ECheck.RECORD_CONTENT, "a final record holds done and a receipt")
        record = self._seal(FINAL_FLAG, self._encode(ResponseFinal(done, receipt)))
        self._finished = True
        return record

    def _encode(self, body: object) -> bytes:
        encoded: bytes | None = None
        with contextlib.suppress(MessageError):
            encoded = encode_envelope(Envelope.wrap(body), max_size=MAX_RECORD_PLAINTEXT)
        if encoded is None:
            raise E2EError(E2ECheck.STREAM_LIMIT, "the record does not encode within its limit")
        return encoded

    def _seal(self, flag: int, plaintext: bytes) -> bytes:
        if self._finished:
            raise E2EError(E2ECheck.AFTER_FINAL, "the stream already ended")
        if self._counter >= MAX_RECORDS:
            raise E2EError(E2ECheck.STREAM_LIMIT, f"at most {MAX_RECORDS} records")
        header = _HEADER.pack(self._counter, flag)
        if self._counter == 0:
            header += self._salt
        nonce = _NONCE_PREFIX + header[:8]
        ciphertext = self._aead.encrypt(
            nonce, plaintext, _associated_data(self._request_id, header)
        )
        self._counter += 1
        return header + ciphertext


class ResponseOpener:
    """The client's side: opens records strictly in order and checks the
    final record's receipt against this request and what the stream carried.

    ``request_sha256`` is :func:`~protocol.e2e.request_digest` of the request
    the client sealed. Whether the receipt key is an attested node's is the
    caller's check (``receipt_key_binding`` against the document's user data).
    """

    __slots__ = (
        "_aead",
        "_counter",
        "_digest",
        "_failed",
        "_final",
        "_request_id",
        "_request_key",
        "_request_sha256",
        "_salt",
    )

    def __init__(
        self, request_key: RequestKey, request_id: bytes, *, request_sha256: bytes
    ) -> None:
        _check_request(request_key, request_id)
        if type(request_sha256) is not bytes or len(request_sha256) != 32:
            raise ValueError("request_sha256 is 32 bytes")
        self._request_key = request_key
        self._request_id = request_id
        self._request_sha256 = request_sha256
        # Both known from record 0, which carries the node's salt.
        self._aead: ChaCha20Poly1305 | None = None
        self._digest: ResponseDigest | None = None
        self._salt: bytes | None = None
        self._counter = 0
        self._final: ResponseFinal | None = None
        self._failed = False

    @property
    def final(self) -> ResponseFinal | None:
        """The final record, once opened."""
        return self._final

    @property
    def salt(self) -> bytes | None:
        """The answer's response salt, once record 0 opened."""
        return self._salt

    def open(self, record: bytes | bytearray | memoryview) -> GenerateChunk | ResponseFinal:
        """The next record's content; :class:`E2EError` naming the check if it
        is not the next record of this stream (and the opener is dead after)."""
        if self._failed:
            raise E2EError(E2ECheck.STREAM_FAILED, "an earlier record failed its check")
        self._failed = True  # until this record passed every check
        if self._final is not None:
            raise E2EError(E2ECheck.AFTER_FINAL, "a record after the final record")
        if not isinstance(record, bytes | bytearray | memoryview):
            raise E2EError(E2ECheck.RECORD_MALFORMED, "a record is bytes")
        data = bytes(record)
        if not RECORD_HEADER_SIZE + TAG_SIZE <= len(data) <= MAX_RECORD_BYTES:
            raise E2EError(E2ECheck.RECORD_MALFORMED, "a record's size is out of range")
        counter, flag = _HEADER.unpack_from(data)
        if flag not in (CHUNK_FLAG, FINAL_FLAG):
            raise E2EError(E2ECheck.RECORD_MALFORMED, "unknown record flag")
        if counter < self._counter:
            raise E2EError(E2ECheck.RECORD_REPLAYED, "a record already seen")
        if counter > self._counter:
            raise E2EError(E2ECheck.RECORD_OUT_OF_ORDER, "a record is missing before this one")
        aead, digest = self._aead, self._digest
        header_size = RECORD_HEADER_SIZE
        salt = b""
        if counter == 0:
            header_size = FIRST_RECORD_HEADER_SIZE
            if len(data) < header_size + TAG_SIZE:
                raise E2EError(E2ECheck.RECORD_MALFORMED, "record 0 carries the response salt")
            salt = data[RECORD_HEADER_SIZE:header_size]
            aead = ChaCha20Poly1305(response_key(self._request_key, self._request_id, salt))
            digest = ResponseDigest(salt)
        assert aead is not None and digest is not None
        header = data[:header_size]
        plaintext: bytes | None = None
        with contextlib.suppress(InvalidTag):
            plaintext = aead.decrypt(
                _NONCE_PREFIX + header[:8],
                data[header_size:],
                _associated_data(self._request_id, header),
            )
        if plaintext is None:
            raise E2EError(E2ECheck.RECORD_FORGED, "the record does not authenticate")
        if counter == 0:
            # Authenticated: from here on, the answer's key and salt.
            self._aead, self._digest, self._salt = aead, digest, salt
        body: object = None
        with contextlib.suppress(MessageError):
            body = decode_envelope(plaintext, max_size=MAX_RECORD_PLAINTEXT).body
        if flag == CHUNK_FLAG:
            if not isinstance(body, GenerateChunk) or not body.text.is_text:
                raise E2EError(E2ECheck.RECORD_CONTENT, "a chunk record holds a text chunk")
            digest.add(body.text.reveal_text())
            self._counter += 1
            self._failed = False
            return body
        if not isinstance(body, ResponseFinal):
            raise E2EError(E2ECheck.RECORD_CONTENT, "a final record holds e2e.final")
        receipt = body.receipt
        if not hmac.compare_digest(receipt.request_id, self._request_id):
            raise ReceiptError(E2ECheck.RECEIPT_REQUEST, "the receipt is for another request")
        verify_receipt(
            receipt,
            request_sha256=self._request_sha256,
            response_sha256=digest.digest(body.done),
        )
        self._counter += 1
        self._final = body
        self._failed = False
        return body

    def finish(self) -> ResponseFinal:
        """Call at the end of the stream: its final record, or
        :class:`E2EError` (``response.missing_final``) if it was cut short."""
        if self._failed:
            raise E2EError(E2ECheck.STREAM_FAILED, "an earlier record failed its check")
        if self._final is None:
            self._failed = True
            raise E2EError(E2ECheck.MISSING_FINAL, "the stream ended without its final record")
        return self._final
