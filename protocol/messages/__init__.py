"""Messages: frozen dataclasses with an explicit, strict msgpack encoding.

Every message between actors and nodes travels in an :class:`Envelope`. A
message *body* is a frozen dataclass registered under a string type tag::

    @message("attest.request")
    @dataclass(frozen=True, slots=True)
    class AttestRequest:
        nonce: Annotated[bytes, MaxLen(64)]
        user_data: bytes | None

The field types a body may use, and their wire forms, are listed in
:mod:`protocol.messages._schema`.

Wire format (version 1)
-----------------------

An envelope is one msgpack array of four elements::

    [version: uint, tag: str, request_id: uint64, body: array]

* ``version`` is 1; any other value is rejected (``envelope.version``).
* ``tag`` is the body's registered type tag: dotted lower-case identifiers,
  at most 64 characters (``core.ping``, ``attest.request``).
* ``request_id`` correlates a reply with its request; 0 means none.
* ``body`` is an array of the dataclass's fields *in declaration order*
  (nested dataclasses likewise; no field names on the wire). ``T | None`` is
  nil or ``T``; tuples and lists are arrays; ``bytes`` is bin, ``str`` is str;
  ``CustomerData`` is str or bin as it was created and decodes back into
  ``CustomerData``; enums are their values; floats are always float 64.

The encoding is canonical: msgpack's shortest form for every int, length and
header, float 64 for floats, no maps, no ext types. Decoding accepts exactly
that form and nothing else:

* total size at most ``max_size`` (8 MiB by default), checked before parsing;
* msgpack parsed with ``raw=False`` (str must be valid UTF-8),
  ``strict_map_key=True``, ext types refused, every length bounded;
* nesting bounded by the registered schemas (at most 16 levels, checked
  when a message type is registered) and by msgpack's parser stack;
* re-encoding the parsed value must reproduce the input byte for byte;
* unknown version, unknown tag, missing or extra field, wrong type, out of
  range, too long, unknown enum value, or a record's own invariant failing
  each raise :class:`MessageDecodeError` whose ``check`` names the rule and
  whose ``path`` names the field. Errors never contain field values.
"""

from protocol.messages._core import ErrorCode, ErrorReply, Ping, Pong
from protocol.messages._errors import (
    MessageCheck,
    MessageDecodeError,
    MessageDefinitionError,
    MessageEncodeError,
    MessageError,
)
from protocol.messages._registry import (
    MAX_TAG_LEN,
    PROTOCOL_VERSION,
    REGISTRY,
    SUPPORTED_VERSIONS,
    Envelope,
    MessageRegistry,
    decode_envelope,
    encode_envelope,
    message,
)
from protocol.messages._schema import (
    I32,
    I64,
    INT64_MAX,
    INT64_MIN,
    MAX_ENVELOPE_SIZE,
    MAX_NESTING_DEPTH,
    MAX_SEQUENCE_LEN,
    U8,
    U16,
    U32,
    U64,
    UINT64_MAX,
    BoolSpec,
    BytesSpec,
    CustomerDataSpec,
    EnumSpec,
    FieldSpec,
    FloatSpec,
    IntRange,
    IntSpec,
    MaxLen,
    OptionalSpec,
    RecordSpec,
    SequenceSpec,
    Spec,
    StrSpec,
)

__all__ = [
    "I32",
    "I64",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_ENVELOPE_SIZE",
    "MAX_NESTING_DEPTH",
    "MAX_SEQUENCE_LEN",
    "MAX_TAG_LEN",
    "PROTOCOL_VERSION",
    "REGISTRY",
    "SUPPORTED_VERSIONS",
    "U8",
    "U16",
    "U32",
    "U64",
    "UINT64_MAX",
    "BoolSpec",
    "BytesSpec",
    "CustomerDataSpec",
    "EnumSpec",
    "Envelope",
    "ErrorCode",
    "ErrorReply",
    "FieldSpec",
    "FloatSpec",
    "IntRange",
    "IntSpec",
    "MaxLen",
    "MessageCheck",
    "MessageDecodeError",
    "MessageDefinitionError",
    "MessageEncodeError",
    "MessageError",
    "MessageRegistry",
    "OptionalSpec",
    "Ping",
    "Pong",
    "RecordSpec",
    "SequenceSpec",
    "Spec",
    "StrSpec",
    "decode_envelope",
    "encode_envelope",
    "message",
]
