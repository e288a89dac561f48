"""The answer stream: records only the client that chose the request key can read.

The serving node seals each chunk of the answer, and then one final record
(finish reason, usage, receipt), with ChaCha20-Poly1305 under the response
key (:data:`~protocol.e2e.RESPONSE_KEY_LABEL`, derived from the request key
and request id; the request's own key is another label, so the two
directions never share a key). A record on the wire is::

    counter (u64 BE) || flag (u8: 0 chunk, 1 final) || AEAD ciphertext

with nonce ``0x00000000 || counter`` and AAD ``"mantle/e2e-response/v1\\0" ||
request_id || counter || flag``. Chunks are ``inference.chunk`` messages, the
final record an ``e2e.final`` message (canonical encodings).

The opener (:class:`ResponseOpener`) accepts counters 0, 1, 2, ... in order
and nothing after the final record: a dropped, reordered or duplicated
record, another request's record, a record after the final one, and a stream
that ends without one (:meth:`ResponseOpener.finish`) are each a typed
:class:`~protocol.e2e.E2EError`; after the first, the opener refuses
everything (``response.stream_failed``). The final record's receipt must be
for this request and for exactly the text and usage the stream carried.

Relays see how many records there are and how long each is.
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
CHUNK_FLAG: Final = 0
FINAL_FLAG: Final = 1
#: The largest record plaintext (an ``inference.chunk`` of 64 Ki characters
#: of up to 4 UTF-8 bytes each, with room for its envelope).
MAX_RECORD_PLAINTEXT: Final = 4 * 64 * 1024 + 1024
#: The largest record on the wire (what a relay may bound one record by).
MAX_RECORD_BYTES: Final = RECORD_HEADER_SIZE + MAX_RECORD_PLAINTEXT + TAG_SIZE
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

    ``SHA-256(domain || SHA-256(text as UTF-8) || msgpack [finish_reason,
    prompt_tokens, completion_tokens])``: the text is hashed as it streams,
    the usage once it is known.
    """

    __slots__ = ("_text",)

    def __init__(self) -> None:
        self._text = hashlib.sha256()

    def add(self, text: str) -> None:
        self._text.update(text.encode("utf-8", "surrogatepass"))

    def digest(self, done: GenerateDone) -> bytes:
        usage: bytes = msgpack.packb(
            [done.finish_reason.value, done.prompt_tokens, done.completion_tokens],
            use_bin_type=True,
        )
        return hashlib.sha256(RESPONSE_DIGEST_DOMAIN + self._text.digest() + usage).digest()


def response_digest(text: str, done: GenerateDone) -> bytes:
    """What a receipt's ``response_sha256`` is for the whole text and ``done``."""
    running = ResponseDigest()
    running.add(text)
    return running.digest(done)


def _aead_for(request_key: RequestKey, request_id: bytes) -> ChaCha20Poly1305:
    if type(request_id) is not bytes or len(request_id) != REQUEST_ID_SIZE:
        raise ValueError(f"a request id is {REQUEST_ID_SIZE} bytes")
    if not isinstance(request_key, RequestKey):
        raise TypeError("a RequestKey")
    return ChaCha20Poly1305(request_key.derive(RESPONSE_KEY_LABEL, request_id))


def _associated_data(request_id: bytes, header: bytes) -> bytes:
    return RESPONSE_AAD_DOMAIN + request_id + header


class ResponseSealer:
    """The serving node's side: seals chunks in order, then the final record.

    :meth:`response_sha256` gives what the receipt signs for the chunks
    sealed so far; :meth:`seal_final` ends the stream (nothing may follow).
    """

    __slots__ = ("_aead", "_counter", "_digest", "_finished", "_request_id")

    def __init__(self, request_key: RequestKey, request_id: bytes) -> None:
        self._aead = _aead_for(request_key, request_id)
        self._request_id = request_id
        self._counter = 0
        self._digest = ResponseDigest()
        self._finished = False

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
        "_request_sha256",
    )

    def __init__(
        self, request_key: RequestKey, request_id: bytes, *, request_sha256: bytes
    ) -> None:
        self._aead = _aead_for(request_key, request_id)
        if type(request_sha256) is not bytes or len(request_sha256) != 32:
            raise ValueError("request_sha256 is 32 bytes")
        self._request_id = request_id
        self._request_sha256 = request_sha256
        self._counter = 0
        self._digest = ResponseDigest()
        self._final: ResponseFinal | None = None
        self._failed = False

    @property
    def final(self) -> ResponseFinal | None:
        """The final record, once opened."""
        return self._final

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
        header = data[:RECORD_HEADER_SIZE]
        plaintext: bytes | None = None
        with contextlib.suppress(InvalidTag):
            plaintext = self._aead.decrypt(
                _NONCE_PREFIX + header[:8],
                data[RECORD_HEADER_SIZE:],
                _associated_data(self._request_id, header),
            )
        if plaintext is None:
            raise E2EError(E2ECheck.RECORD_FORGED, "the record does not authenticate")
        body: object = None
        with contextlib.suppress(MessageError):
            body = decode_envelope(plaintext, max_size=MAX_RECORD_PLAINTEXT).body
        if flag == CHUNK_FLAG:
            if not isinstance(body, GenerateChunk) or not body.text.is_text:
                raise E2EError(E2ECheck.RECORD_CONTENT, "a chunk record holds a text chunk")
            self._digest.add(body.text.reveal_text())
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
            response_sha256=self._digest.digest(body.done),
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
