"""The counter binding: which definition of a TPM NV counter a caller trusts.

:mod:`actors.counter_guard` checks a counter against a binding before its value
counts (the reasoning is there); this module is only the binding's value and its
strict encoding, which the node's state directory and the keyring file
(:mod:`protocol.key_custody`) carry::

    magic "MNTLCTR\\x01" (8) || counter (4, big-endian) || name length (1) || NV name

A decoding failure is :class:`CounterRefused` (MALFORMED_BINDING), which never
quotes its input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

#: Largest counter number a binding may name (TPM NV handles are 32-bit).
_MAX_COUNTER: Final = (1 << 32) - 1

# Encoding: magic (8) || counter (4, big-endian) || name length (1) || NV name.
_MAGIC: Final = b"MNTLCTR\x01"
_HEADER: Final = len(_MAGIC) + 4 + 1

#: TPM NV names: a 2-byte TPM_ALG_ID of the name algorithm and that digest.
_NAME_DIGEST_SIZES: Final = {
    0x0004: 20,  # SHA-1
    0x000B: 32,  # SHA-256
    0x000C: 48,  # SHA-384
    0x000D: 64,  # SHA-512
}

#: Longest encoded binding (the SHA-512 name); readers bound what they load by it.
MAX_BINDING_BYTES: Final = _HEADER + 2 + max(_NAME_DIGEST_SIZES.values())


class CounterCheck(enum.StrEnum):
    """Why a counter was refused."""

    #: The binding names a counter that is no longer defined (the owner deleted it).
    MISSING = "missing"
    #: A counter is defined, but not the one the binding names.
    RECREATED = "recreated"
    #: A counter is defined, but the caller has no binding for it.
    BINDING_MISSING = "binding_missing"
    #: The binding does not decode, or names another counter.
    MALFORMED_BINDING = "malformed_binding"
    #: The counter does not hold what was verified, or an increment did not add one.
    UNEXPECTED_VALUE = "unexpected_value"
    #: A TPM command failed.
    TPM = "tpm"


class CounterRefused(Exception):
    """The counter must not be used; :attr:`check` names why."""

    def __init__(self, check: CounterCheck, detail: str) -> None:
        self.check = check
        self.detail = detail
        super().__init__(f"counter refused [{check.value}]: {detail}")


def _valid_name(nv_name: object) -> bool:
    if type(nv_name) is not bytes or len(nv_name) < 2:
        return False
    size = _NAME_DIGEST_SIZES.get(int.from_bytes(nv_name[:2], "big"))
    return size is not None and len(nv_name) == 2 + size


@dataclass(frozen=True)
class CounterBinding:
    """Which definition of counter :attr:`counter` the caller trusts: its NV name."""

    counter: int
    nv_name: bytes

    def __post_init__(self) -> None:
        if type(self.counter) is not int or not 0 <= self.counter <= _MAX_COUNTER:
            raise CounterRefused(CounterCheck.MALFORMED_BINDING, "counter number out of range")
        if not _valid_name(self.nv_name):
            raise CounterRefused(CounterCheck.MALFORMED_BINDING, "not a TPM NV name")

    def encode(self) -> bytes:
        return _MAGIC + self.counter.to_bytes(4, "big") + bytes([len(self.nv_name)]) + self.nv_name

    @classmethod
    def decode(cls, data: bytes) -> CounterBinding:
        """The binding :meth:`encode` wrote; anything else is MALFORMED_BINDING."""
        if type(data) is not bytes or len(data) < _HEADER or not data.startswith(_MAGIC):
            raise CounterRefused(CounterCheck.MALFORMED_BINDING, "not a counter binding")
        counter = int.from_bytes(data[len(_MAGIC) : len(_MAGIC) + 4], "big")
        name_length = data[_HEADER - 1]
        if len(data) != _HEADER + name_length:
            raise CounterRefused(CounterCheck.MALFORMED_BINDING, "counter binding length")
        return cls(counter=counter, nv_name=data[_HEADER:])
