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

import hmac
from typing import Final

from actors.seams.tpm import TPM, CounterMismatch, CounterMissing, TPMError
from protocol.counter_binding import (
    MAX_BINDING_BYTES,
    CounterBinding,
    CounterCheck,
    CounterRefused,
)

__all__ = [
    "MAX_ADVANCE",
    "MAX_BINDING_BYTES",
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
