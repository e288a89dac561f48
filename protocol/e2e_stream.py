"""The HTTP body of ``POST /v1/mantle/chat``: sealed records as the ingress relays them.

The request body is an encoded :class:`protocol.e2e.SealedRequest`
(``Content-Type: application/vnd.mantle.e2e+msgpack``). A refusal before the
answer starts is an ordinary HTTP error with an OpenAI error body (JSON). An
answer is ``200`` with ``Content-Type: application/vnd.mantle.e2e-stream``
and a body of frames, each flushed as it comes::

    frame = type (u8) || length (u32, big endian) || payload (length bytes)

* type ``0x00`` (:data:`RECORD_FRAME`): one sealed response record exactly
  as the serving node sealed it (:class:`protocol.e2e.ResponseSealer`);
  the ingress cannot open it and does not change it;
* type ``0x01`` (:data:`ERROR_FRAME`): the request failed after the answer
  started; the payload is an OpenAI error body (``{"error": {...}}``, UTF-8
  JSON), and nothing follows.

The stream ends after the record the node marked final, or after an error
frame; an end anywhere else is a truncation (the client's
:class:`protocol.e2e.ResponseOpener` also refuses an answer without its final
record). Sans-IO: :class:`StreamDecoder` takes bytes as they arrive.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

from protocol.e2e import MAX_RECORD_BYTES

#: The request body's media type.
SEALED_REQUEST_MEDIA_TYPE: Final = "application/vnd.mantle.e2e+msgpack"
#: The answer's media type.
STREAM_MEDIA_TYPE: Final = "application/vnd.mantle.e2e-stream"

RECORD_FRAME: Final = 0x00
ERROR_FRAME: Final = 0x01
#: Longest error payload (an OpenAI error body of fixed sentences).
MAX_ERROR_PAYLOAD: Final = 4096
_HEADER: Final = struct.Struct(">BI")
HEADER_SIZE: Final = _HEADER.size


class StreamCheck(enum.StrEnum):
    """What was wrong with a stream (the :attr:`StreamError.check`)."""

    #: A frame type other than record or error.
    FRAME_TYPE = "stream.frame_type"
    #: A frame longer than its type allows, or empty.
    FRAME_LENGTH = "stream.frame_length"
    #: Bytes after the error frame.
    AFTER_ERROR = "stream.after_error"
    #: The body ended inside a frame.
    TRUNCATED = "stream.truncated"


class StreamError(Exception):
    """A malformed answer stream; :attr:`check` names what. Quotes nothing."""

    def __init__(self, check: StreamCheck) -> None:
        super().__init__(f"malformed answer stream [{check.value}]")
        self.check = check


def _frame(kind: int, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def record_frame(record: bytes) -> bytes:
    """The frame of one sealed record."""
    if not 0 < len(record) <= MAX_RECORD_BYTES:
        raise ValueError(f"a record is 1 to {MAX_RECORD_BYTES} bytes")
    return _frame(RECORD_FRAME, record)


def error_frame(error_body: bytes) -> bytes:
    """The frame of an error after the answer started (an OpenAI error body)."""
    if not 0 < len(error_body) <= MAX_ERROR_PAYLOAD:
        raise ValueError(f"an error body is 1 to {MAX_ERROR_PAYLOAD} bytes")
    return _frame(ERROR_FRAME, error_body)


class StreamDecoder:
    """Splits an answer body into ``(type, payload)`` frames as bytes arrive.

    :meth:`feed` returns the frames completed so far; :meth:`close` checks
    the body did not end inside one. A malformed frame is a
    :class:`StreamError` at once (nothing of it is buffered beyond its header).
    """

    __slots__ = ("_buffer", "_errored")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._errored = False

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._errored and data:
            raise StreamError(StreamCheck.AFTER_ERROR)
        self._buffer += data
        frames: list[tuple[int, bytes]] = []
        while len(self._buffer) >= HEADER_SIZE:
            kind, length = _HEADER.unpack_from(self._buffer)
            if kind not in (RECORD_FRAME, ERROR_FRAME):
                raise StreamError(StreamCheck.FRAME_TYPE)
            limit = MAX_RECORD_BYTES if kind == RECORD_FRAME else MAX_ERROR_PAYLOAD
            if not 0 < length <= limit:
                raise StreamError(StreamCheck.FRAME_LENGTH)
            if len(self._buffer) < HEADER_SIZE + length:
                break
            payload = bytes(self._buffer[HEADER_SIZE : HEADER_SIZE + length])
            del self._buffer[: HEADER_SIZE + length]
            frames.append((kind, payload))
            if kind == ERROR_FRAME:
                self._errored = True
                if self._buffer:
                    raise StreamError(StreamCheck.AFTER_ERROR)
                break
        return frames

    def close(self) -> None:
        if self._buffer:
            raise StreamError(StreamCheck.TRUNCATED)


__all__ = [
    "ERROR_FRAME",
    "HEADER_SIZE",
    "MAX_ERROR_PAYLOAD",
    "RECORD_FRAME",
    "SEALED_REQUEST_MEDIA_TYPE",
    "STREAM_MEDIA_TYPE",
    "StreamCheck",
    "StreamDecoder",
    "StreamError",
    "error_frame",
    "record_frame",
]
