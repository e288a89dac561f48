"""The seam between one node's actor system and remote messaging.

The core knows nothing about wire messages or transports, and never imports
the remote layer (:mod:`actors._remote`). The dependency points the other way:
the remote layer implements :class:`RemoteHooks`, which is defined here, and
attaches it with :func:`actors._core._system.attach_remote`. From then on the
system calls the hooks for every ref that names another node (tell, ask,
reply, monitor, demonitor, ``Down``); with no hooks attached such a ref is
unreachable (:class:`PeerUnavailable`, ``Down(noconnection)``).

:func:`attach_remote` hands back a :class:`~actors._core._system.RemoteInbox`:
the only door through which the layer reaches into the system (deliver a
message, settle an ask, add or drop a remote watcher, report a lost peer).
Neither side is a public method of :class:`ActorSystem`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from actors._core._errors import ActorError
    from actors._core._types import ActorRef, Down


class RemoteHooks(Protocol):
    """What the system asks of remote messaging, for refs on other nodes.

    ``send_tell`` and ``send_ask`` raise (:class:`PeerUnavailable`,
    :class:`NotSendable`) when the message cannot leave; the other hooks are
    best effort and report nothing, except ``monitor``, which returns False
    when the monitor request could not be sent (the watcher then gets
    ``Down(noconnection)`` at once).
    """

    def send_tell(self, ref: ActorRef, message: object, sender: ActorRef | None) -> None: ...

    def send_ask(
        self, ref: ActorRef, message: object, sender: ActorRef | None, request_id: int
    ) -> None: ...

    def send_reply(
        self, node: str, request_id: int, value: object, error: ActorError | None
    ) -> None: ...

    def monitor(self, watcher: ActorRef, target: ActorRef, monitor: int) -> bool: ...

    def demonitor(self, target: ActorRef, monitor: int) -> None: ...

    def send_down(self, watcher: ActorRef, down: Down) -> None: ...
