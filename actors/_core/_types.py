"""Values of the actor runtime: references, exit reasons, crash reports and
the system messages an actor receives (``Down``, ``Exit``)."""

from __future__ import annotations

import enum
import os
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from actors._core._system import ActorSystem


@dataclass(frozen=True, slots=True)
class ActorRef:
    """The address of an actor, the same whether it lives on this node or another.

    ``actor_id`` names one incarnation (ids are never reused on a node);
    ``actor_id == 0`` with a ``name`` addresses whichever actor holds that
    registered name on ``node`` when a message arrives, so a name-addressed
    reference keeps working across supervisor restarts.
    """

    node: str
    actor_id: int
    name: str | None = None
    _system: ActorSystem | None = field(default=None, compare=False, repr=False)

    def label(self) -> str:
        """A short, log-safe label: ``node/name`` or ``node/#id``."""
        if self.name is not None:
            return f"{self.node}/{self.name}"
        return f"{self.node}/#{self.actor_id}"

    def _bound(self) -> ActorSystem:
        if self._system is None:
            raise RuntimeError("this ActorRef is not bound to an actor system")
        return self._system

    def tell(self, message: object, *, sender: ActorRef | None = None) -> None:
        """Enqueue ``message`` without waiting. Locally, a full mailbox raises
        :class:`MailboxFull`; across nodes delivery is best effort (at most once)."""
        self._bound().tell(self, message, sender=sender)

    async def send(self, message: object, *, sender: ActorRef | None = None) -> None:
        """Enqueue ``message``, waiting for room while the local mailbox is full."""
        await self._bound().send(self, message, sender=sender)

    async def ask(self, message: object, timeout: float, *, sender: ActorRef | None = None) -> Any:
        """Send ``message`` and wait up to ``timeout`` seconds for the reply
        (the value the target's ``receive`` returns)."""
        return await self._bound().ask(self, message, timeout, sender=sender)


class ExitKind(enum.StrEnum):
    """Why an actor ended. ``NORMAL`` and ``SHUTDOWN`` are the orderly ones."""

    NORMAL = "normal"
    SHUTDOWN = "shutdown"
    CRASHED = "crashed"
    KILLED = "killed"
    ESCALATED = "escalated"
    NOPROC = "noproc"
    NOCONNECTION = "noconnection"


_ORDERLY: Final = frozenset({ExitKind.NORMAL, ExitKind.SHUTDOWN})


@dataclass(frozen=True, slots=True)
class CrashReport:
    """Which actor failed, with which exception type, where.

    Deliberately holds no exception message and no message contents: both may
    carry customer data (invariant I2). ``location`` is ``file:line`` of the
    innermost traceback frame (the raising frame), with the file's base name.
    """

    actor: str
    exc_type: str
    location: str
    function: str

    @classmethod
    def from_exception(cls, actor: str, exc: BaseException) -> CrashReport:
        location, function = "unknown", "unknown"
        frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
        if frames:
            last = frames[-1]
            location = f"{os.path.basename(last.filename)}:{last.lineno}"
            function = last.name
        exc_type = type(exc)
        module = exc_type.__module__
        qualified = (
            exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"
        )
        return cls(actor=actor, exc_type=qualified, location=location, function=function)

    def summary(self) -> str:
        return f"{self.actor} raised {self.exc_type} at {self.location} in {self.function}"


@dataclass(frozen=True, slots=True)
class ExitReason:
    kind: ExitKind
    crash: CrashReport | None = None

    @property
    def abnormal(self) -> bool:
        """True unless the actor ended normally or was shut down."""
        return self.kind not in _ORDERLY


NORMAL: Final = ExitReason(ExitKind.NORMAL)
SHUTDOWN: Final = ExitReason(ExitKind.SHUTDOWN)
KILLED: Final = ExitReason(ExitKind.KILLED)
NOPROC: Final = ExitReason(ExitKind.NOPROC)
NOCONNECTION: Final = ExitReason(ExitKind.NOCONNECTION)


@dataclass(frozen=True, slots=True)
class Down:
    """Delivered to a monitoring actor once the monitored actor has ended."""

    ref: ActorRef
    reason: ExitReason
    monitor: int


@dataclass(frozen=True, slots=True)
class Exit:
    """Delivered to an actor that traps exits when a linked actor has ended."""

    ref: ActorRef
    reason: ExitReason
