"""The actor runtime: actors, references, supervision, and the seams they use.

An actor is a mailbox plus a handler (:class:`Actor`); it is addressed by an
:class:`ActorRef` that works the same on this node and across nodes.
:class:`Supervisor` restarts children with Erlang/OTP semantics. Actor code
reaches time, randomness and the network only through the seams in
:mod:`actors.seams`, so the deterministic simulator runs the same code.
"""

from actors._core._driver import TIMED_OUT, Driver, TrioDriver, Waiter
from actors._core._errors import (
    ActorCrashed,
    ActorError,
    ActorStopped,
    AskTimeout,
    MailboxFull,
    NameTaken,
    NoSuchActor,
    NotSendable,
    PeerUnavailable,
)
from actors._core._supervisor import (
    ChildSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorStartError,
    WhichChildren,
)
from actors._core._system import Actor, ActorSystem, Context, SystemStats
from actors._core._trio import open_actor_system
from actors._core._types import (
    KILLED,
    NOCONNECTION,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    ActorRef,
    CrashReport,
    Down,
    Exit,
    ExitKind,
    ExitReason,
)

__all__ = [
    "KILLED",
    "NOCONNECTION",
    "NOPROC",
    "NORMAL",
    "SHUTDOWN",
    "TIMED_OUT",
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorRef",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "ChildSpec",
    "Context",
    "CrashReport",
    "Down",
    "Driver",
    "Exit",
    "ExitKind",
    "ExitReason",
    "MailboxFull",
    "NameTaken",
    "NoSuchActor",
    "NotSendable",
    "PeerUnavailable",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorStartError",
    "SystemStats",
    "TrioDriver",
    "Waiter",
    "WhichChildren",
    "open_actor_system",
]
