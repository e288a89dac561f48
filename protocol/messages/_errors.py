"""The message-codec error hierarchy.

Every failure while decoding untrusted bytes is a :class:`MessageDecodeError`;
every refusal to encode a value is a :class:`MessageEncodeError`. Both carry
the name of the failed check and the *path* of the offending field (field
names and sequence indices, e.g. ``body.items[3].name``). Neither ever carries
a field value: values may be customer data (invariant I2), and even routing
values would turn error reports into an oracle for whoever sent the bytes.
"""

from __future__ import annotations


class MessageError(Exception):
    """Base class of every error raised by :mod:`protocol.messages`.

    ``check`` names the failed check (a short dotted identifier such as
    ``"field.range"``); ``path`` locates the field (empty for whole-message
    checks).
    """

    def __init__(self, check: str, path: str = "", detail: str = "") -> None:
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
