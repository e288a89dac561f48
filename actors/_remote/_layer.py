"""Routing actor messages between nodes over a :class:`Transport`.

The same layer runs over TCP + Noise in the daemon and over the simulated
network in the simulator; only the transport differs. Frames are envelopes
of the ``actor.*`` messages in :mod:`actors._remote.messages`.

The layer attaches to its system through the core's private seam
(:func:`actors._core._system.attach_remote`): it implements the
:class:`~actors._core._remote_hooks.RemoteHooks` the system calls for refs on
other nodes, and reaches back in only through the
:class:`~actors._core._system.RemoteInbox` it gets in return.

Failure semantics: a tell across nodes is delivered at most once (and, on a
simulated network that duplicates, possibly twice); problems on the far side
(no such actor, full mailbox) are counted there, not reported back. An ask
always ends: with the reply, a typed failure from the far side, an
:class:`AskTimeout`, or :class:`PeerUnavailable` as soon as the link is known
to be lost.
"""

from __future__ import annotations

import contextlib

from actors._core._errors import (
    ActorCrashed,
    ActorError,
    ActorStopped,
    MailboxFull,
    NoSuchActor,
    NotSendable,
    PeerUnavailable,
)
from actors._core._system import ActorSystem, attach_remote
from actors._core._types import ActorRef, CrashReport, Down, ExitKind, ExitReason
from actors._remote.messages import (
    FailureCode,
    RemoteAsk,
    RemoteDemonitor,
    RemoteDown,
    RemoteFailure,
    RemoteMonitor,
    RemoteReply,
    RemoteTell,
    WireCrash,
    WireExit,
    WireRef,
)
from actors.log import get_logger
from actors.seams.transport import Transport
from protocol.messages import (
    REGISTRY,
    Envelope,
    MessageDecodeError,
    MessageEncodeError,
    MessageRegistry,
)

# get_logger returns a lazy proxy, so a module-level logger still follows a
# configuration installed after import.
_log = get_logger("actors.remote")


def _wire_ref(ref: ActorRef) -> WireRef:
    return WireRef(ref.node, ref.actor_id, ref.name)


def _wire_crash(report: CrashReport | None) -> WireCrash | None:
    if report is None:
        return None
    return WireCrash(
        report.actor[:256], report.exc_type[:256], report.location[:256], report.function[:256]
    )


def _crash_report(wire: WireCrash | None) -> CrashReport | None:
    if wire is None:
        return None
    return CrashReport(wire.actor, wire.exc_type, wire.location, wire.function)


class RemoteLayer:
    """This node's end of remote messaging: attaches to ``system`` (which
    then routes refs on other nodes here) and to ``transport`` (whose events
    it receives). Construct it once per system; that is all the wiring."""

    def __init__(
        self,
        system: ActorSystem,
        transport: Transport,
        *,
        registry: MessageRegistry = REGISTRY,
    ) -> None:
        if transport.local_node != system.node:
            raise ValueError("transport and actor system name different nodes")
        self._system = system
        self._transport = transport
        self._registry = registry
        self._down: set[str] = set()
        self.frames_sent = 0
        self.frames_received = 0
        self.frames_rejected = 0
        self._inbox = attach_remote(system, self)
        transport.bind(self)

    # ------------------------------------------------------------ encoding

    def _payload(self, message: object) -> bytes:
        # NotSendable is raised outside the handler: the message being sent
        # may be customer data, and no __context__ may keep its encoding error.
        with contextlib.suppress(MessageEncodeError):
            return self._registry.encode(Envelope.wrap(message, registry=self._registry))
        raise NotSendable(type(message).__qualname__)

    def _send(self, node: str, body: object, request_id: int = 0) -> bool:
        frame: bytes | None = None
        with contextlib.suppress(MessageEncodeError):
            frame = self._registry.encode(
                Envelope.wrap(body, request_id=request_id, registry=self._registry)
            )
        if frame is None:
            # A payload that fits an envelope on its own can still push the
            # frame around it past the size bound.
            raise NotSendable(type(body).__qualname__)
        if node in self._down or not self._transport.send(node, frame):
            return False
        self.frames_sent += 1
        return True

    def peer_is_down(self, node: str) -> bool:
        return node in self._down

    # --------------------------- called by the system (its RemoteHooks)

    def send_tell(self, ref: ActorRef, message: object, sender: ActorRef | None) -> None:
        body = RemoteTell(
            _wire_ref(ref), _wire_ref(sender) if sender else None, self._payload(message)
        )
        if not self._send(ref.node, body):
            raise PeerUnavailable(ref.node)

    def send_ask(
        self,
        ref: ActorRef,
        message: object,
        sender: ActorRef | None,
        request_id: int,
    ) -> None:
        body = RemoteAsk(
            _wire_ref(ref), _wire_ref(sender) if sender else None, self._payload(message)
        )
        if not self._send(ref.node, body, request_id):
            raise PeerUnavailable(ref.node)

    def send_reply(
        self, node: str, request_id: int, value: object, error: ActorError | None
    ) -> None:
        body: RemoteReply | RemoteFailure
        if error is None:
            try:
                body = RemoteReply(b"" if value is None else self._payload(value))
            except NotSendable:
                body = RemoteFailure(FailureCode.NOT_SENDABLE, None)
        elif isinstance(error, ActorCrashed):
            body = RemoteFailure(FailureCode.CRASHED, _wire_crash(error.report))
        elif isinstance(error, MailboxFull):
            body = RemoteFailure(FailureCode.MAILBOX_FULL, None)
        elif isinstance(error, NoSuchActor):
            body = RemoteFailure(FailureCode.NO_SUCH_ACTOR, None)
        else:
            body = RemoteFailure(FailureCode.STOPPED, None)
        try:
            self._send(node, body, request_id)
        except NotSendable:
            # The reply fitted alone but not inside its frame: the asker
            # still gets an answer (I7), and the replying actor keeps running.
            self._send(node, RemoteFailure(FailureCode.NOT_SENDABLE, None), request_id)

    def monitor(self, watcher: ActorRef, target: ActorRef, monitor: int) -> bool:
        return self._send(
            target.node, RemoteMonitor(_wire_ref(watcher), _wire_ref(target), monitor)
        )

    def demonitor(self, target: ActorRef, monitor: int) -> None:
        self._send(target.node, RemoteDemonitor(_wire_ref(target), monitor))

    def send_down(self, watcher: ActorRef, down: Down) -> None:
        body = RemoteDown(
            _wire_ref(watcher),
            _wire_ref(down.ref),
            down.monitor,
            WireExit(down.reason.kind.value),
            _wire_crash(down.reason.crash),
        )
        self._send(watcher.node, body)

    # ----------------------------------------------- transport events

    def peer_up(self, peer: str) -> None:
        self._down.discard(peer)

    def peer_down(self, peer: str) -> None:
        self._down.add(peer)
        self._inbox.peer_lost(peer)

    def frame_received(self, peer: str, frame: bytes) -> None:
        try:
            envelope = self._registry.decode(frame)
        except MessageDecodeError as error:
            self._reject(peer, error.check)
            return
        self.frames_received += 1
        body = envelope.body
        system = self._system
        inbox = self._inbox
        if isinstance(body, RemoteTell):
            target = self._local_ref(peer, body.target)
            message = self._inner(peer, body.payload)
            if target is None or message is None:
                return
            try:
                inbox.deliver(target, message, self._peer_ref(peer, body.sender), None)
            except MailboxFull:
                system.stats.dropped_full += 1
            except NoSuchActor:
                system.stats.dropped_noproc += 1
        elif isinstance(body, RemoteAsk):
            self._ask(peer, envelope.request_id, body)
        elif isinstance(body, RemoteReply):
            value = None if not body.payload else self._inner(peer, body.payload)
            if body.payload and value is None:
                inbox.complete(envelope.request_id, None, NotSendable("undecodable"), node=peer)
            else:
                inbox.complete(envelope.request_id, value, None, node=peer)
        elif isinstance(body, RemoteFailure):
            inbox.complete(envelope.request_id, None, self._failure(peer, body), node=peer)
        elif isinstance(body, RemoteMonitor):
            target = self._local_ref(peer, body.target)
            watcher = self._peer_ref(peer, body.watcher)
            if target is not None and watcher is not None:
                inbox.add_monitor(watcher, target, body.monitor)
        elif isinstance(body, RemoteDemonitor):
            inbox.remove_monitors(peer, body.monitor)
        elif isinstance(body, RemoteDown):
            watcher = self._local_ref(peer, body.watcher)
            target = self._peer_ref(peer, body.target)
            if watcher is not None and target is not None:
                reason = ExitReason(ExitKind(body.reason.value), _crash_report(body.crash))
                inbox.deliver_down(watcher, Down(target, reason, body.monitor))
        else:
            self._reject(peer, "actor.unexpected_type")

    # ------------------------------------------------------------ helpers

    def _reject(self, peer: str, check: str) -> None:
        self.frames_rejected += 1
        _log.warning("remote_frame_rejected", peer=peer, check=check)

    def _local_ref(self, peer: str, wire: WireRef) -> ActorRef | None:
        if wire.node != self._system.node:
            self._reject(peer, "actor.wrong_node")
            return None
        return ActorRef(wire.node, wire.actor_id, wire.name, self._system)

    def _peer_ref(self, peer: str, wire: WireRef | None) -> ActorRef | None:
        # A peer may only speak for its own actors: refs claiming another
        # node are not believed.
        if wire is None or wire.node != peer:
            return None
        return ActorRef(wire.node, wire.actor_id, wire.name, self._system)

    def _inner(self, peer: str, payload: bytes) -> object | None:
        try:
            return self._registry.decode(payload).body
        except MessageDecodeError as error:
            self._reject(peer, error.check)
            return None

    def _ask(self, peer: str, request_id: int, body: RemoteAsk) -> None:
        target = self._local_ref(peer, body.target)
        if target is None:
            self.send_reply(peer, request_id, None, NoSuchActor(ActorRef(peer, 0, None)))
            return
        message = self._inner(peer, body.payload)
        if message is None:
            self._send(peer, RemoteFailure(FailureCode.UNDECODABLE, None), request_id)
            return
        try:
            self._inbox.deliver(
                target, message, self._peer_ref(peer, body.sender), (peer, request_id)
            )
        except ActorError as error:
            self.send_reply(peer, request_id, None, error)

    def _failure(self, peer: str, body: RemoteFailure) -> ActorError:
        code = body.code
        remote = ActorRef(peer, 0, None)
        if code is FailureCode.CRASHED:
            report = _crash_report(body.crash) or CrashReport(peer, "unknown", "unknown", "unknown")
            return ActorCrashed(report)
        if code is FailureCode.MAILBOX_FULL:
            return MailboxFull(remote)
        if code is FailureCode.NO_SUCH_ACTOR:
            return NoSuchActor(remote)
        if code is FailureCode.STOPPED:
            return ActorStopped(remote)
        return NotSendable("remote" if code is FailureCode.NOT_SENDABLE else "undecodable")
