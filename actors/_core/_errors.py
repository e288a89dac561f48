"""Errors the actor runtime raises to callers.

No error here ever carries a message's contents or the text of an exception
raised by a handler: messages may hold customer data (invariant I2), so an
error names what failed (the check, the actor, the exception type and code
location) and nothing else.

The error tree of the whole package is drawn in the docstring of :mod:`actors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actors._core._types import ActorRef, CrashReport


class ActorError(Exception):
    """Base class of every error the actor runtime raises."""


class MailboxFull(ActorError):
    """The target's mailbox is at its bound; the message was not enqueued."""

    def __init__(self, target: ActorRef) -> None:
        super().__init__(f"mailbox of {target.label()} is full")
        self.target = target


class NoSuchActor(ActorError):
    """No live actor has this id or registered name (it stopped or never existed)."""

    def __init__(self, target: ActorRef) -> None:
        super().__init__(f"no live actor at {target.label()}")
        self.target = target


class NameTaken(ActorError):
    """A registered name is already held by a live actor on this node."""

    def __init__(self, name: str) -> None:
        super().__init__(f"name {name!r} is already registered")
        self.name = name


class AskTimeout(ActorError, TimeoutError):
    """No reply arrived within the ask's timeout."""

    def __init__(self, target: ActorRef, timeout: float) -> None:
        super().__init__(f"no reply from {target.label()} within {timeout:g}s")
        self.target = target
        self.timeout = timeout


class ActorCrashed(ActorError):
    """The target crashed while handling the request; carries the crash
    report (actor, exception type, code location), never the exception text."""

    def __init__(self, report: CrashReport) -> None:
        super().__init__(f"actor crashed: {report.summary()}")
        self.report = report


class ActorStopped(ActorError):
    """The target stopped before it handled the request."""

    def __init__(self, target: ActorRef) -> None:
        super().__init__(f"{target.label()} stopped before replying")
        self.target = target


class PeerUnavailable(ActorError):
    """The target's node is not reachable (no link, or the link was lost)."""

    def __init__(self, node: str) -> None:
        super().__init__(f"node {node!r} is unreachable")
        self.node = node


class NotSendable(ActorError):
    """The message cannot cross to another node: its type is not a registered
    wire message."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"message type {type_name} is not a registered wire message")
        self.type_name = type_name
