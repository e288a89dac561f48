"""The one type that carries customer data (invariant I2).

Prompt text, completion text, tool arguments and any per-request field beyond
routing metadata travel inside :class:`CustomerData`. Its ``repr``, ``str`` and
``format`` render a fixed redaction marker, it refuses pickling and copying
into other reprs, and the logging pipeline renders it as the marker too. Code
that really needs the plaintext calls :meth:`CustomerData.reveal_text` or
:meth:`CustomerData.reveal_bytes`, which makes every unwrapping site greppable.
"""

from __future__ import annotations

import hmac
from typing import Final, NoReturn

REDACTED: Final = "<customer-data:redacted>"


class CustomerDataNotText(ValueError):
    """``reveal_text()`` on bytes that are not UTF-8.

    Raised instead of :class:`UnicodeDecodeError`, whose message quotes the
    offending byte and whose ``object`` attribute holds the whole plaintext.
    """


class CustomerData:
    """Customer plaintext that redacts itself everywhere it could leak."""

    __slots__ = ("_value",)

    _value: bytes | str

    def __init__(self, value: bytes | str) -> None:
        if not isinstance(value, (bytes, str)):
            raise TypeError("CustomerData wraps str or bytes")
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("CustomerData is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("CustomerData is immutable")

    # -- explicit unwrapping -------------------------------------------------

    def reveal_text(self) -> str:
        """The plaintext as ``str`` (UTF-8 decoded if it was bytes).

        Raises :class:`CustomerDataNotText` (carrying no content) if the bytes
        are not UTF-8: data decoded from the wire as bin may be anything.
        """
        v = self._value
        if isinstance(v, str):
            return v
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            pass
        # Raised outside the handler so not even __context__ keeps the original.
        raise CustomerDataNotText("customer data is not UTF-8 text")

    def reveal_bytes(self) -> bytes:
        """The plaintext as ``bytes`` (UTF-8 encoded if it was text)."""
        v = self._value
        return v if isinstance(v, bytes) else v.encode("utf-8")

    @property
    def is_text(self) -> bool:
        return isinstance(self._value, str)

    def __len__(self) -> int:
        # Sizes are routing metadata (limits, quotas); the content is not.
        return len(self._value)

    # -- everything that could render it -------------------------------------

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return REDACTED

    def __bytes__(self) -> NoReturn:
        raise TypeError("use CustomerData.reveal_bytes() to unwrap customer data")

    def __reduce__(self) -> NoReturn:
        raise TypeError("customer data cannot be pickled")

    def __copy__(self) -> CustomerData:
        return self

    def __deepcopy__(self, memo: object) -> CustomerData:
        return self

    # -- comparison without timing leaks -------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CustomerData):
            return NotImplemented
        if self.is_text != other.is_text:
            return False
        return hmac.compare_digest(self.reveal_bytes(), other.reveal_bytes())

    def __hash__(self) -> int:
        # Hashing would let dict/set timing and collisions depend on content.
        raise TypeError("CustomerData is unhashable")
