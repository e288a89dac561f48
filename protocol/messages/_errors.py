"""The message-codec error hierarchy.

Every failure while decoding untrusted bytes is a :class:`MessageDecodeError`;
every refusal to encode a value is a :class:`MessageEncodeError`. Both carry
the name of the failed check and the *path* of the offending field (field
names and sequence indices, e.g. ``body.items[3].name``). Neither ever carries
a field value: values may be customer data (invariant I2), and even routing
values would turn error reports into an oracle for whoever sent the bytes.
"""

from __future__ import annotations

import enum


class MessageCheck(enum.StrEnum):
    """The check a :class:`MessageError` reports as failed (its ``check``).

    Dotted names, grouped by what they check; values are stable (tests and
    logs compare them as strings).
    """

    # the input itself
    INPUT_TYPE = "input.type"

    # msgpack syntax and limits
    MSGPACK_DEPTH = "msgpack.depth"
    MSGPACK_PACK = "msgpack.pack"
    MSGPACK_SYNTAX = "msgpack.syntax"

    # the envelope around a body
    ENVELOPE_BODY_TYPE = "envelope.body_type"
    ENVELOPE_NON_CANONICAL = "envelope.non_canonical"
    ENVELOPE_REQUEST_ID = "envelope.request_id"
    ENVELOPE_SHAPE = "envelope.shape"
    ENVELOPE_SIZE = "envelope.size"
    ENVELOPE_TAG = "envelope.tag"
    ENVELOPE_TAG_MISMATCH = "envelope.tag_mismatch"
    ENVELOPE_TYPE = "envelope.type"
    ENVELOPE_UNKNOWN_TAG = "envelope.unknown_tag"
    ENVELOPE_VERSION = "envelope.version"

    # a field of a body
    FIELD_ENUM = "field.enum"
    FIELD_EXTRA = "field.extra"
    FIELD_LENGTH = "field.length"
    FIELD_MISSING = "field.missing"
    FIELD_RANGE = "field.range"
    FIELD_TYPE = "field.type"

    # a record's own invariant
    RECORD_INVARIANT = "record.invariant"

    # what a caller expected of a decoded message
    MESSAGE_UNEXPECTED_TYPE = "message.unexpected_type"

    # registering message types (import time)
    REGISTRY_DUPLICATE_TAG = "registry.duplicate_tag"
    REGISTRY_DUPLICATE_TYPE = "registry.duplicate_type"
    REGISTRY_TAG_SYNTAX = "registry.tag_syntax"

    # a message class's definition (import time)
    SCHEMA_ANNOTATIONS = "schema.annotations"
    SCHEMA_DEPTH = "schema.depth"
    SCHEMA_ENUM_EMPTY = "schema.enum_empty"
    SCHEMA_ENUM_VALUES = "schema.enum_values"
    SCHEMA_FIELD_NOT_IN_INIT = "schema.field_not_in_init"
    SCHEMA_INT_RANGE = "schema.int_range"
    SCHEMA_LIST = "schema.list"
    SCHEMA_MARKER = "schema.marker"
    SCHEMA_MAX_LEN = "schema.max_len"
    SCHEMA_NOT_DATACLASS = "schema.not_dataclass"
    SCHEMA_NOT_FROZEN = "schema.not_frozen"
    SCHEMA_RECURSIVE = "schema.recursive"
    SCHEMA_TUPLE = "schema.tuple"
    SCHEMA_UNION = "schema.union"
    SCHEMA_UNKNOWN_MARKER = "schema.unknown_marker"
    SCHEMA_UNSUPPORTED_TYPE = "schema.unsupported_type"


class MessageError(Exception):
    """Base class of every error raised by :mod:`protocol.messages`.

    ``check`` names the failed check (a short dotted identifier such as
    ``"field.range"``); ``path`` locates the field (empty for whole-message
    checks).
    """

    def __init__(self, check: MessageCheck, path: str = "", detail: str = "") -> None:
        self.check = check
        self.path = path
        text = f"check={check}"
        if path:
            text += f" at {path}"
        if detail:
            text += f" ({detail})"
        super().__init__(text)


class MessageDecodeError(MessageError):
    """Untrusted bytes are not a valid envelope under this codec's rules."""


class MessageEncodeError(MessageError):
    """A value cannot be encoded (wrong type, out of range, too large)."""


class MessageDefinitionError(MessageError, TypeError):
    """A message class cannot be registered (unsupported field type, not frozen, ...).

    Raised at import time of the module defining the message, never on the wire.
    """
