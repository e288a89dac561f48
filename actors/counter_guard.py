"""Counter guard: use a TPM monotonic counter only after checking it is the one we made.

A node keeps a floor on the TPM (the highest release version it accepted, a
keyring version) in an NV counter. The TPM owner, who on EC2 is whoever has
root on the host, can undefine that counter and define a new one at the same
handle. A caller that then read the value naively would see a missing counter
as zero (accepting any old release), or advance a counter it did not create.
This module is the one place that checks a counter before its value counts.

What the TPM guarantees (TPM 2.0 Part 1, NV counters; see actors.seams.tpm):

* a defined counter never decreases, across reboots;
* a command authorised in an HMAC session runs only on the index whose name
  the caller put into the HMAC, so an increment can name the definition it
  may advance;
* a counter defined afresh is initialised one above the highest count of any
  counter deleted from this TPM. So whatever counter stands at a handle now
  holds more than any counter that stood there before: deleting and
  re-creating never lowers the value found at the handle. The mark is shared
  by all counters on the TPM (a keyring counter deleted at 100 makes a release
  counter defined afterwards start at 101).

What it does not guarantee:

* that the counter survives: the owner can delete any owner-defined index
  (only platform authority can make one undeletable, and EC2 user space does
  not have it). The node's counter alone therefore cannot keep an old release
  from running somewhere; the floor that does is the verifiers' (keys nodes,
  clients and node links refuse releases below the minimum version the release
  signers publish), and it holds wherever a release boots.
* that a counter is the one we defined: the owner can define another at the
  same handle. :meth:`~actors.seams.tpm.TPM.counter_define` gives each
  definition its own NV name (the public area includes a random authorisation
  policy), and the :class:`CounterBinding` the caller keeps records that name,
  so a re-created counter shows a different name: :attr:`CounterCheck.RECREATED`.
  The name is public (``TPM2_NV_ReadPublic`` needs no authorisation), so an
  owner who copies the public area byte for byte gets the same name; then the
  re-created counter still starts above the deleted one's value, so it refuses
  every release the deleted one refused (and the release it last accepted).
* that the binding is genuine: the binding lives in the node's state directory,
  which root can read, delete and rewrite. Sealing it would not help: sealing
  keeps data secret from other PCR states but does not authenticate origin,
  and an owner can create a sealed object under any PCR policy. The binding is
  only a memory of the name; the checks below make losing it or the counter
  visible:

  ========================  ==================  ===================================
  binding                   counter             result
  ========================  ==================  ===================================
  none                      none                first use: define, return binding
  none                      exists              :attr:`CounterCheck.BINDING_MISSING`
  exists                    none                :attr:`CounterCheck.MISSING`
  exists                    other name          :attr:`CounterCheck.RECREATED`
  exists                    same name           the counter's value
  ========================  ==================  ===================================

  An owner who deletes both counter and binding gets a node that looks new:
  the guard defines a counter again, and it starts above the TPM's high-water
  mark, which the deleted counter raised to at least the release version the
  node last accepted. The caller compares that value against what it is about
  to accept *before* using anything (boot: before measuring), so every release
  up to the last one accepted is refused as a rollback; only a release above
  every count a deleted counter held boots. Deletion buys the owner a denial
  of service (which root has anyway), never a rollback.

  The same table means a crash between defining a counter and persisting its
  binding leaves BINDING_MISSING on the next start; the recovery is the owner
  deleting the counter (the fresh start above), which cannot roll anything back.

:func:`advance_counter` advances only a counter that still carries the bound
name and still holds the value the caller verified, one increment at a time,
each of which must add exactly one, and reads the result back. Every increment
names the bound definition and the TPM checks that name in the same command
(an HMAC session covers the index's name), so a counter that moved, vanished
or was swapped underneath is refused, never advanced, even one swapped between
the guard's check and the increment.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from typing import Final

from actors.seams.tpm import TPM, CounterMismatch, CounterMissing, TPMError

__all__ = [
    "MAX_ADVANCE",
    "CounterBinding",
    "CounterCheck",
    "CounterRefused",
    "advance_counter",
    "open_counter",
]

#: Most increments one :func:`advance_counter` call makes. Each is an NV write
#: (TPMs rate-limit and wear NV), so an unbounded target would stall the caller
#: and spend the TPM's NV endurance; callers that advance by a signed version
#: check their own, tighter policy first.
MAX_ADVANCE: Final = 4096

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


def _tpm_failure(what: str, error: TPMError) -> CounterRefused:
    return CounterRefused(CounterCheck.TPM, f"{what}: {error}")


def _current_name(tpm: TPM, counter: int) -> bytes | None:
    """The counter's NV name now, ``None`` if it is not defined."""
    try:
        return tpm.counter_name(counter)
    except CounterMissing:
        return None
    except CounterMismatch:
        failure = CounterRefused(
            CounterCheck.RECREATED,
            f"counter {counter} is not the one this node defined (the NV index there is not"
            " a counter of the kind this node defines)",
        )
    except TPMError as error:
        failure = _tpm_failure(f"cannot read the name of counter {counter}", error)
    raise failure


def _verified(tpm: TPM, binding: CounterBinding) -> None:
    """Refuse unless the counter stands and carries the bound name."""
    name = _current_name(tpm, binding.counter)
    if name is None:
        raise CounterRefused(
            CounterCheck.MISSING,
            f"counter {binding.counter} was deleted: the node recorded it, the TPM no longer"
            " has it (the TPM owner undefined it)",
        )
    if not hmac.compare_digest(name, binding.nv_name):
        raise CounterRefused(
            CounterCheck.RECREATED,
            f"counter {binding.counter} is not the one this node defined (its NV name differs):"
            " it was deleted and defined again",
        )


def _read(tpm: TPM, counter: int) -> int:
    try:
        return tpm.counter_read(counter)
    except CounterMissing:
        failure = CounterRefused(
            CounterCheck.MISSING, f"counter {counter} was deleted while in use"
        )
    except TPMError as error:
        failure = _tpm_failure(f"cannot read counter {counter}", error)
    raise failure


def _read_verified(tpm: TPM, binding: CounterBinding) -> int:
    # Name, value, name: the value read belongs to the bound definition only if
    # that definition stood both before and after the read.
    _verified(tpm, binding)
    value = _read(tpm, binding.counter)
    _verified(tpm, binding)
    return value


def open_counter(
    tpm: TPM, counter: int, binding: CounterBinding | None
) -> tuple[int, CounterBinding]:
    """The verified value of ``counter`` and the binding to keep for it.

    With a binding, the counter must stand and carry the bound name. Without
    one, there must be no counter either: then this is the first use, the
    counter is defined (starting above every count a deleted counter held) and
    the new binding returned; the caller persists it before relying on it.
    Refusals raise :class:`CounterRefused`; see the module docstring's table.
    """
    if binding is not None:
        if binding.counter != counter:
            raise CounterRefused(
                CounterCheck.MALFORMED_BINDING,
                f"the binding is for counter {binding.counter}, not counter {counter}",
            )
        return _read_verified(tpm, binding), binding
    if _current_name(tpm, counter) is not None:
        raise CounterRefused(
            CounterCheck.BINDING_MISSING,
            f"counter {counter} exists but this node has no record of defining it (its binding"
            " was lost or removed)",
        )
    try:
        name = tpm.counter_define(counter)
    except TPMError as error:
        failure = _tpm_failure(f"cannot define counter {counter}", error)
    else:
        fresh = CounterBinding(counter=counter, nv_name=name)
        return _read_verified(tpm, fresh), fresh
    raise failure


def advance_counter(tpm: TPM, binding: CounterBinding, current: int, target: int) -> int:
    """Advance the bound counter from the verified ``current`` to ``target``.

    Checks again that the counter carries the bound name and holds
    ``current``, then increments one step at a time; every step must return
    exactly one more, and the final value is read back and checked. Returns
    ``target``. At most :data:`MAX_ADVANCE` steps; a ``target`` below
    ``current`` is refused (counters only go up).
    """
    if target < current:
        raise CounterRefused(
            CounterCheck.UNEXPECTED_VALUE,
            f"counter {binding.counter} holds {current}; it cannot go back to {target}",
        )
    if target - current > MAX_ADVANCE:
        raise CounterRefused(
            CounterCheck.UNEXPECTED_VALUE,
            f"advancing counter {binding.counter} by {target - current} exceeds the limit of"
            f" {MAX_ADVANCE} increments",
        )
    value = _read_verified(tpm, binding)
    if value != current:
        raise CounterRefused(
            CounterCheck.UNEXPECTED_VALUE,
            f"counter {binding.counter} holds {value}, not the verified {current}: it moved",
        )
    while value < target:
        failure: CounterRefused | None = None
        try:
            # The TPM increments only the bound definition: nothing swapped in
            # since the check above is ever advanced.
            stepped = tpm.counter_increment(binding.counter, expected_name=binding.nv_name)
        except CounterMissing:
            failure = CounterRefused(
                CounterCheck.MISSING, f"counter {binding.counter} was deleted while advancing"
            )
        except CounterMismatch:
            failure = CounterRefused(
                CounterCheck.RECREATED,
                f"counter {binding.counter} was replaced while advancing; the replacement was"
                " not advanced",
            )
        except TPMError as error:
            failure = _tpm_failure(f"cannot increment counter {binding.counter}", error)
        if failure is not None:
            raise failure
        if stepped != value + 1:
            raise CounterRefused(
                CounterCheck.UNEXPECTED_VALUE,
                f"counter {binding.counter} went from {value} to {stepped} in one increment",
            )
        value = stepped
    final = _read_verified(tpm, binding)
    if final != target:
        raise CounterRefused(
            CounterCheck.UNEXPECTED_VALUE,
            f"counter {binding.counter} reads {final} after advancing to {target}",
        )
    return final
