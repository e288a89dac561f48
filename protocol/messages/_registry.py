"""The envelope, the message registry, and envelope encoding/decoding."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, NoReturn, TypeVar

import msgpack

from protocol.messages._errors import (
    MessageCheck,
    MessageDecodeError,
    MessageDefinitionError,
    MessageEncodeError,
)
from protocol.messages._schema import (
    MAX_ENVELOPE_SIZE,
    MAX_NESTING_DEPTH,
    MAX_SEQUENCE_LEN,
    UINT64_MAX,
    Codec,
    RecordSpec,
    _Fail,
    compile_codec,
    record_spec,
    spec_depth,
)

#: The envelope format version this code writes.
PROTOCOL_VERSION: Final = 1
#: Versions this code reads. A new version is added here only with its decoder.
SUPPORTED_VERSIONS: Final = frozenset({PROTOCOL_VERSION})

#: Type tags: dotted lower-case identifiers, e.g. ``"attest.request"``.
_TAG_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
MAX_TAG_LEN: Final = 64

#: Maps never occur in a valid envelope; a few are let through msgpack so that
#: one is reported as a type mismatch at the field where it appeared.
_MAX_MAP_LEN: Final = 16

M = TypeVar("M")


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """One message on the wire: format version, type tag, request id, body.

    ``tag`` must be the tag the body's class was registered under; build
    envelopes with :meth:`Envelope.wrap` to get it right. ``request_id``
    correlates replies with requests (0 when there is no request).
    """

    version: int
    tag: str
    request_id: int
    body: object

    @classmethod
    def wrap(
        cls, body: object, *, request_id: int = 0, registry: MessageRegistry | None = None
    ) -> Envelope:
        """An envelope for ``body`` at the current version, tagged from the registry."""
        reg = REGISTRY if registry is None else registry
        return cls(PROTOCOL_VERSION, reg.tag_of(type(body)), request_id, body)


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    tag: str
    message_type: type
    codec: Codec


class _ThreadPackers(threading.local):
    """One reusable msgpack Packer per thread.

    A Packer keeps an internal buffer, so one instance must not be shared
    between threads (inference runs generation in worker threads); creating a
    fresh one per call (``msgpack.packb``) costs more than the packing itself.
    """

    def __init__(self) -> None:
        self.packer = msgpack.Packer(use_bin_type=True, autoreset=True)


_PACKERS: Final = _ThreadPackers()


def _pack(obj: object) -> bytes:
    data: bytes = _PACKERS.packer.pack(obj)
    return data


def _reject_ext(code: int, data: bytes) -> NoReturn:
    # Unreachable while max_ext_len=0 (msgpack refuses ext before calling
    # this); kept so that no ext type can ever be turned into an object.
    raise ValueError("ext types are not part of the protocol")


class MessageRegistry:
    """Type tags <-> message classes, each with its compiled codec.

    The process-wide table is :data:`REGISTRY`, filled by ``@message(tag)``
    when modules that define messages are imported; it only ever grows, at
    import time, and is then read-only in effect. Separate registries exist
    for code (and tests) that want an isolated table.
    """

    def __init__(self) -> None:
        self._by_tag: dict[str, _Entry] = {}
        self._by_type: dict[type, _Entry] = {}

    # -- registration ------------------------------------------------------------

    def register(self, tag: str, message_type: type) -> None:
        """Add ``message_type`` under ``tag``; both must be new to this registry."""
        if not isinstance(tag, str) or len(tag) > MAX_TAG_LEN or not _TAG_PATTERN.fullmatch(tag):
            raise MessageDefinitionError(
                MessageCheck.REGISTRY_TAG_SYNTAX, getattr(message_type, "__qualname__", "")
            )
        if tag in self._by_tag:
            raise MessageDefinitionError(MessageCheck.REGISTRY_DUPLICATE_TAG, tag)
        if message_type in self._by_type:
            raise MessageDefinitionError(
                MessageCheck.REGISTRY_DUPLICATE_TYPE, message_type.__qualname__
            )
        spec = record_spec(message_type)
        if 1 + spec_depth(spec) > MAX_NESTING_DEPTH:
            raise MessageDefinitionError(MessageCheck.SCHEMA_DEPTH, message_type.__qualname__)
        entry = _Entry(tag, message_type, compile_codec(spec))
        self._by_tag[tag] = entry
        self._by_type[message_type] = entry

    def message(self, tag: str) -> Callable[[type[M]], type[M]]:
        """Class decorator: ``@registry.message("attest.request")`` above ``@dataclass``."""

        def register(message_type: type[M]) -> type[M]:
            self.register(tag, message_type)
            return message_type

        return register

    # -- introspection ---------------------------------------------------------------

    def tag_of(self, message_type: type) -> str:
        entry = self._by_type.get(message_type)
        if entry is None:
            raise MessageEncodeError(
                MessageCheck.ENVELOPE_BODY_TYPE, detail="not a registered message type"
            )
        return entry.tag

    def type_of(self, tag: str) -> type:
        entry = self._by_tag.get(tag)
        if entry is None:
            raise KeyError(tag)
        return entry.message_type

    def schema_of(self, message_type: type) -> RecordSpec:
        entry = self._by_type.get(message_type)
        if entry is None:
            raise KeyError(message_type)
        spec = entry.codec.spec
        assert isinstance(spec, RecordSpec)
        return spec

    def message_types(self) -> Mapping[str, type]:
        """Every registered tag and its class."""
        return MappingProxyType({tag: e.message_type for tag, e in self._by_tag.items()})

    # -- the codec ---------------------------------------------------------------------

    def encode(self, envelope: Envelope, *, max_size: int = MAX_ENVELOPE_SIZE) -> bytes:
        """The canonical wire form of ``envelope`` (see the package docstring)."""
        if type(envelope) is not Envelope:
            raise MessageEncodeError(MessageCheck.ENVELOPE_TYPE, detail="expected Envelope")
        if type(envelope.version) is not int or envelope.version not in SUPPORTED_VERSIONS:
            raise MessageEncodeError(MessageCheck.ENVELOPE_VERSION)
        request_id = envelope.request_id
        if type(request_id) is not int or not 0 <= request_id <= UINT64_MAX:
            raise MessageEncodeError(
                MessageCheck.ENVELOPE_REQUEST_ID, detail="expected int in [0, 2**64-1]"
            )
        entry = self._by_type.get(type(envelope.body))
        if entry is None:
            raise MessageEncodeError(
                MessageCheck.ENVELOPE_BODY_TYPE, detail="not a registered message type"
            )
        if envelope.tag != entry.tag:
            raise MessageEncodeError(
                MessageCheck.ENVELOPE_TAG_MISMATCH, detail="tag is not the body's registered tag"
            )
        failure: _Fail | None = None
        try:
            body = entry.codec.encode(envelope.body)
        except _Fail as fail:
            failure = fail
        if failure is not None:
            # Every error below is raised outside its handler, so no
            # __context__ keeps the exception that was caught (see decode).
            raise MessageEncodeError(failure.check, failure.path("body"), failure.detail)
        try:
            data: bytes | None = _pack((envelope.version, entry.tag, request_id, body))
        except (ValueError, TypeError, OverflowError):
            # E.g. a str holding a lone surrogate, which has no UTF-8 form; the
            # UnicodeEncodeError holds the whole string (perhaps a prompt).
            data = None
        if data is None:
            raise MessageEncodeError(MessageCheck.MSGPACK_PACK)
        if len(data) > max_size:
            raise MessageEncodeError(
                MessageCheck.ENVELOPE_SIZE, detail=f"larger than {max_size} bytes"
            )
        return data

    def decode(
        self, data: bytes | bytearray | memoryview, *, max_size: int = MAX_ENVELOPE_SIZE
    ) -> Envelope:
        """Parse and fully validate one envelope from untrusted bytes.

        Raises :class:`MessageDecodeError` (and nothing else) for any input
        that is not exactly the canonical encoding of a valid envelope.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MessageDecodeError(MessageCheck.INPUT_TYPE, detail="expected bytes")
        # Size first: nothing below allocates more than a bounded multiple of it.
        # (A memoryview's len() counts items, which may be wider than a byte.)
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size > max_size:
            raise MessageDecodeError(
                MessageCheck.ENVELOPE_SIZE, detail=f"larger than {max_size} bytes"
            )
        syntax: MessageCheck | None = None
        try:
            obj = msgpack.unpackb(
                data,
                raw=False,
                use_list=False,
                strict_map_key=True,
                ext_hook=_reject_ext,
                max_str_len=max_size,
                max_bin_len=max_size,
                max_array_len=MAX_SEQUENCE_LEN,
                max_map_len=_MAX_MAP_LEN,
                max_ext_len=0,
            )
        except msgpack.StackError:
            syntax = MessageCheck.MSGPACK_DEPTH
        except Exception:
            # Truncated input, trailing bytes, reserved byte 0xc1, invalid UTF-8,
            # ext types, limits.
            syntax = MessageCheck.MSGPACK_SYNTAX
        if syntax is not None:
            # Raised outside the handler: msgpack's exceptions hold what they
            # read (ExtraData keeps the whole decoded envelope, prompt and all),
            # and an error raised inside it would keep them in __context__
            # even with ``from None``.
            raise MessageDecodeError(syntax)
        if type(obj) is not tuple or len(obj) != 4:
            raise MessageDecodeError(
                MessageCheck.ENVELOPE_SHAPE, detail="expected a 4-element array"
            )
        version, tag, request_id, body = obj
        if type(version) is not int or version not in SUPPORTED_VERSIONS:
            raise MessageDecodeError(MessageCheck.ENVELOPE_VERSION, detail="unsupported version")
        if type(tag) is not str:
            raise MessageDecodeError(MessageCheck.ENVELOPE_TAG, detail="expected str")
        entry = self._by_tag.get(tag)
        if entry is None:
            raise MessageDecodeError(MessageCheck.ENVELOPE_UNKNOWN_TAG)
        if type(request_id) is not int or not 0 <= request_id <= UINT64_MAX:
            raise MessageDecodeError(
                MessageCheck.ENVELOPE_REQUEST_ID, detail="expected int in [0, 2**64-1]"
            )
        # One value, one encoding: re-encoding what we parsed must give the
        # input back, which rejects over-long ints and lengths, float32 and
        # other malleable forms (so hashes and signatures over encodings, and
        # duplicate detection, see one byte string per message).
        if _pack(obj) != data:
            raise MessageDecodeError(MessageCheck.ENVELOPE_NON_CANONICAL)
        failure: _Fail | None = None
        try:
            value = entry.codec.decode(body)
        except _Fail as fail:
            failure = fail
        if failure is not None:
            raise MessageDecodeError(failure.check, failure.path("body"), failure.detail)
        return Envelope(version, tag, request_id, value)


#: The process-wide registry used by :func:`message`, :func:`encode_envelope`
#: and :func:`decode_envelope`.
REGISTRY: Final = MessageRegistry()


def message(tag: str) -> Callable[[type[M]], type[M]]:
    """Register a frozen dataclass as a message type in :data:`REGISTRY`.

    Use above ``@dataclass(frozen=True)``::

        @message("attest.request")
        @dataclass(frozen=True, slots=True)
        class AttestRequest:
            nonce: Annotated[bytes, MaxLen(64)]
    """
    return REGISTRY.message(tag)


def encode_envelope(envelope: Envelope, *, max_size: int = MAX_ENVELOPE_SIZE) -> bytes:
    return REGISTRY.encode(envelope, max_size=max_size)


def decode_envelope(
    data: bytes | bytearray | memoryview, *, max_size: int = MAX_ENVELOPE_SIZE
) -> Envelope:
    return REGISTRY.decode(data, max_size=max_size)
