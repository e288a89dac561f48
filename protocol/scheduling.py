"""Wire messages between the scheduler and inference nodes (``sched.*``).

Membership (an inference node's membership actor <-> the scheduler):

* :class:`JoinScheduler` (``sched.join``): the node serves ``model`` with
  ``slots`` concurrent generations, under a fresh random ``session``. Which
  node joined is never a field: it is the authenticated link's peer.
* :class:`JoinAccepted` (``sched.joined``): the scheduler registered the
  session and names the heartbeat interval it expects.
* :class:`Heartbeat` (``sched.heartbeat``): the node is alive, with its free
  slots and the attempts it is running.
* :class:`Rejoin` (``sched.rejoin``): the scheduler does not know that
  session (it dropped the node, or restarted): join again.
* :class:`LeaveScheduler` (``sched.leave``): the node stops serving that
  session (its worker went away).

Work (the scheduler <-> the node's worker named ``"inference"``):

* :class:`PlaceAttempt` (``sched.place``): run ``request`` as ``attempt``;
* :class:`CancelAttempt` (``sched.cancel``): stop it within one token;
* :class:`AttemptChunk`, :class:`AttemptDone`, :class:`AttemptFailed`
  (``sched.chunk``, ``sched.done``, ``sched.error``): the generation's
  replies, each naming its attempt.

Sealed work (the end-to-end path, :mod:`protocol.e2e`):

* :class:`PlaceSealed` (``sched.place_sealed``): run the sealed ``request``
  as ``attempt``; only a node one of its envelopes names can open it, and
  the scheduler places it on no other;
* :class:`AttemptRecord` (``sched.record``): the ``index``-th sealed response
  record of ``attempt`` as the node sealed it, ``final`` on the last one
  (chunk records, then one final record with usage and receipt); the
  scheduler relays the bytes, which it cannot open. ``sched.cancel`` and
  ``sched.error`` serve sealed attempts as they serve plain ones.

Evidence (the scheduler's side asks a node's worker, over the attested link):

* :class:`AttestNode` (``sched.attest``): a fresh document over a client's
  ``nonce``, asked with an actor ask; answered :class:`NodeAttestation`
  (``sched.attested``: the document, its kind and the node's static key) or
  ``core.error``.

An *attempt* is one placement of one request on one node; a request retried
elsewhere gets a new attempt id, so a late reply from a node the request left
never reaches it. Ids are opaque 16-byte values drawn by the scheduler.
Request and reply bodies are the :mod:`protocol.inference` messages, passed
through unchanged (their texts are customer data).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Final

from protocol.attestation import MAX_EVIDENCE_BYTES, DocumentKind
from protocol.e2e import MAX_RECORD_BYTES, SealedRequest, record_is_final
from protocol.inference import GenerateChunk, GenerateDone, GenerateRequest
from protocol.messages import U32, ErrorReply, IntRange, MaxLen, message

#: Size of a session or attempt id, in bytes.
ID_SIZE: Final = 16
#: Most concurrent generations one node may announce.
MAX_SLOTS: Final = 256
#: Longest model id on the wire (the same bound as ``inference.generate``).
MAX_MODEL_LEN: Final = 128
#: Longest heartbeat interval a scheduler may ask for, in seconds.
MAX_HEARTBEAT_INTERVAL: Final = 3600.0

#: A client's nonce for :class:`AttestNode`: 32 to 64 bytes.
MIN_ATTEST_NONCE: Final = 32
MAX_ATTEST_NONCE: Final = 64

Id = Annotated[bytes, MaxLen(ID_SIZE)]
Slots = Annotated[int, IntRange(1, MAX_SLOTS)]


def _check_id(value: bytes) -> None:
    if len(value) != ID_SIZE:
        raise ValueError(f"ids are {ID_SIZE} bytes")


@message("sched.join")
@dataclasses.dataclass(frozen=True, slots=True)
class JoinScheduler:
    """Register this node's session for ``model`` with ``slots`` slots."""

    session: Id
    model: Annotated[str, MaxLen(MAX_MODEL_LEN)]
    slots: Slots

    def __post_init__(self) -> None:
        _check_id(self.session)
        if not self.model:
            raise ValueError("a node serves a named model")


@message("sched.joined")
@dataclasses.dataclass(frozen=True, slots=True)
class JoinAccepted:
    """``session`` is registered; heartbeat every ``heartbeat_interval`` seconds
    (a node silent for three intervals is dropped)."""

    session: Id
    heartbeat_interval: float

    def __post_init__(self) -> None:
        _check_id(self.session)
        if not (
            math.isfinite(self.heartbeat_interval)
            and 0 < self.heartbeat_interval <= MAX_HEARTBEAT_INTERVAL
        ):
            raise ValueError("the heartbeat interval is out of range")


@message("sched.heartbeat")
@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    """``session`` is alive with ``free_slots`` free and ``running`` attempts."""

    session: Id
    free_slots: Annotated[int, IntRange(0, MAX_SLOTS)]
    running: Annotated[tuple[Id, ...], MaxLen(MAX_SLOTS)]

    def __post_init__(self) -> None:
        _check_id(self.session)
        for attempt in self.running:
            _check_id(attempt)


@message("sched.rejoin")
@dataclasses.dataclass(frozen=True, slots=True)
class Rejoin:
    """The scheduler holds no session ``session`` for this node: join afresh."""

    session: Id

    def __post_init__(self) -> None:
        _check_id(self.session)


@message("sched.leave")
@dataclasses.dataclass(frozen=True, slots=True)
class LeaveScheduler:
    """The node ends ``session``: nothing it was running will answer."""

    session: Id

    def __post_init__(self) -> None:
        _check_id(self.session)


@message("sched.place")
@dataclasses.dataclass(frozen=True, slots=True)
class PlaceAttempt:
    """Generate ``request``; every reply names ``attempt``."""

    attempt: Id
    request: GenerateRequest

    def __post_init__(self) -> None:
        _check_id(self.attempt)


@message("sched.cancel")
@dataclasses.dataclass(frozen=True, slots=True)
class CancelAttempt:
    """Stop ``attempt`` within one token (it ends ``cancelled``)."""

    attempt: Id

    def __post_init__(self) -> None:
        _check_id(self.attempt)


@message("sched.chunk")
@dataclasses.dataclass(frozen=True, slots=True)
class AttemptChunk:
    """The ``index``-th chunk (from 0) of ``attempt``: the scheduler passes on
    chunks in order only, so a lost or duplicated frame never leaves a gap or
    a repeat in a completion."""

    attempt: Id
    index: U32
    chunk: GenerateChunk

    def __post_init__(self) -> None:
        _check_id(self.attempt)


@message("sched.done")
@dataclasses.dataclass(frozen=True, slots=True)
class AttemptDone:
    """``attempt`` ended after ``chunks`` chunks."""

    attempt: Id
    chunks: U32
    done: GenerateDone

    def __post_init__(self) -> None:
        _check_id(self.attempt)


@message("sched.error")
@dataclasses.dataclass(frozen=True, slots=True)
class AttemptFailed:
    """``attempt`` ended with an explicit error (or the node refused it)."""

    attempt: Id
    error: ErrorReply

    def __post_init__(self) -> None:
        _check_id(self.attempt)


@message("sched.place_sealed")
@dataclasses.dataclass(frozen=True, slots=True)
class PlaceSealed:
    """Open ``request`` with this node's static key and generate it; every
    reply names ``attempt`` (records as ``sched.record``, or ``sched.error``)."""

    attempt: Id
    request: SealedRequest

    def __post_init__(self) -> None:
        _check_id(self.attempt)


@message("sched.record")
@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The ``index``-th (from 0) sealed response record of ``attempt``.
    Relayed in order only; whether it is the last (the attempt ended) is
    the record's own flag (:attr:`final`), never a second field that could
    disagree with what the client's opener authenticates."""

    attempt: Id
    index: U32
    record: Annotated[bytes, MaxLen(MAX_RECORD_BYTES)]

    def __post_init__(self) -> None:
        _check_id(self.attempt)
        record_is_final(self.record)  # a header and tag, a known flag

    @property
    def final(self) -> bool:
        """Whether the record is flagged final (the attempt ended)."""
        return record_is_final(self.record)


@message("sched.attest")
@dataclasses.dataclass(frozen=True, slots=True)
class AttestNode:
    """A fresh document of the node over ``nonce`` (a client's, 32 to 64 bytes)."""

    nonce: Annotated[bytes, MaxLen(MAX_ATTEST_NONCE)]

    def __post_init__(self) -> None:
        if len(self.nonce) < MIN_ATTEST_NONCE:
            raise ValueError(f"a nonce is {MIN_ATTEST_NONCE} to {MAX_ATTEST_NONCE} bytes")


@message("sched.attested")
@dataclasses.dataclass(frozen=True, slots=True)
class NodeAttestation:
    """The node's answer to :class:`AttestNode`: its document, the kind, and
    the Noise static key the document binds (a client seals to the key and
    checks it against the document's binding)."""

    kind: DocumentKind
    document: Annotated[bytes, MaxLen(MAX_EVIDENCE_BYTES)]
    static_key: Annotated[bytes, MaxLen(32)]

    def __post_init__(self) -> None:
        if not self.document:
            raise ValueError("a document is not empty")
        if len(self.static_key) != 32:
            raise ValueError("a static key is 32 bytes")


__all__ = [
    "ID_SIZE",
    "MAX_ATTEST_NONCE",
    "MAX_HEARTBEAT_INTERVAL",
    "MAX_MODEL_LEN",
    "MAX_SLOTS",
    "MIN_ATTEST_NONCE",
    "AttemptChunk",
    "AttemptDone",
    "AttemptFailed",
    "AttemptRecord",
    "AttestNode",
    "CancelAttempt",
    "Heartbeat",
    "JoinAccepted",
    "JoinScheduler",
    "LeaveScheduler",
    "NodeAttestation",
    "PlaceAttempt",
    "PlaceSealed",
    "Rejoin",
]
