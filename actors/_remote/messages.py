"""Wire messages of remote actor messaging (registered under ``actor.*``).

A user message crosses nodes as an encoded inner envelope (``payload``), so
any registered message type can travel and is decoded with the same strict
codec. The request id of an ask and its reply is the outer envelope's
``request_id``. Replies are correlated per authenticated peer: a reply from
node B can only settle an ask that was sent to node B.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated

from protocol.messages import U64, MaxLen, message

MAX_NODE_LEN = 64
MAX_NAME_LEN = 128
MAX_REPORT_FIELD = 256


@dataclasses.dataclass(frozen=True, slots=True)
class WireRef:
    node: Annotated[str, MaxLen(MAX_NODE_LEN)]
    actor_id: U64
    name: Annotated[str, MaxLen(MAX_NAME_LEN)] | None


@dataclasses.dataclass(frozen=True, slots=True)
class WireCrash:
    """A crash report on the wire: names and places, never exception text."""

    actor: Annotated[str, MaxLen(MAX_REPORT_FIELD)]
    exc_type: Annotated[str, MaxLen(MAX_REPORT_FIELD)]
    location: Annotated[str, MaxLen(MAX_REPORT_FIELD)]
    function: Annotated[str, MaxLen(MAX_REPORT_FIELD)]


class FailureCode(enum.IntEnum):
    """Why a remote ask failed. Wire values: never renumber, only add."""

    NO_SUCH_ACTOR = 1
    MAILBOX_FULL = 2
    CRASHED = 3
    STOPPED = 4
    NOT_SENDABLE = 5
    UNDECODABLE = 6


class WireExit(enum.StrEnum):
    NORMAL = "normal"
    SHUTDOWN = "shutdown"
    CRASHED = "crashed"
    KILLED = "killed"
    ESCALATED = "escalated"
    NOPROC = "noproc"
    NOCONNECTION = "noconnection"


@message("actor.tell")
@dataclasses.dataclass(frozen=True, slots=True)
class RemoteTell:
    target: WireRef
    sender: WireRef | None
    payload: bytes


@message("actor.ask")
@dataclasses.dataclass(frozen=True, slots=True)
class RemoteAsk:
    target: WireRef
    sender: WireRef | None
    payload: bytes


@message("actor.reply")
@dataclasses.dataclass(frozen=True, slots=True)
class RemoteReply:
    """``payload`` is an encoded envelope, or empty for a ``None`` reply."""

    payload: bytes


@message("actor.failure")
@dataclasses.dataclass(frozen=True, slots=True)
class RemoteFailure:
    code: FailureCode
    crash: WireCrash | None


@message("actor.monitor")
@dataclasses.dataclass(frozen=True, slots=True)
class RemoteMonitor:
    watcher: WireRef
    target: WireRef
    monitor: U64


@message("actor.demonitor")
@dataclasses.dataclass(frozen=True, slots=True)
class RemoteDemonitor:
    target: WireRef
    monitor: U64


@message("actor.down")
@dataclasses.dataclass(frozen=True, slots=True)
class RemoteDown:
    watcher: WireRef
    target: WireRef
    monitor: U64
    reason: WireExit
    crash: WireCrash | None


@message("actor.hello")
@dataclasses.dataclass(frozen=True, slots=True)
class NodeHello:
    """A node's handshake payload on a node link: who it claims to be (the
    claim is checked against the Noise static key). Its attestation follows
    the handshake, bound to the handshake hash (``actors.channel``)."""

    node: Annotated[str, MaxLen(MAX_NODE_LEN)]
