"""The actor runtime of one node: cells, mailboxes, asks, links, monitors,
the name registry.

An actor is a mailbox plus a handler. Each live actor has a *cell* holding its
queues, links and monitors, and one task (started through the
:class:`~actors.lowlevel.Driver`) that takes one message at a time and
awaits the actor's ``receive``. Nothing here touches trio, sockets, the OS
clock or OS randomness directly: time, randomness, scheduling and the network
arrive by injection, so the simulator runs this exact code.

The network arrives as :class:`~actors._core._remote_hooks.RemoteHooks`,
attached by the remote layer with :func:`attach_remote`; this module never
imports that layer. Without hooks, refs on other nodes are unreachable.

Mailbox bound (the backpressure contract)
-----------------------------------------
Each mailbox holds at most ``capacity`` *user* messages (tell, send, ask).

* ``tell`` at the bound raises :class:`MailboxFull`; nothing is enqueued, the
  caller decides (drop, retry later, or use ``send``).
* ``send`` at the bound waits, first come first served, until the actor takes
  a message; cancelling the caller withdraws it.
* ``ask`` at the bound raises :class:`MailboxFull` at once.
* A message arriving from another node at a full mailbox is dropped and
  counted (``stats.dropped_full``); an ask gets a ``MailboxFull`` reply.

System signals (stop requests, exit signals from links, ``Down`` and
``Exit`` notifications) travel in a separate, unbounded queue that the actor
drains before its mailbox, so supervision keeps working when mailboxes are
full. Consequently a ``Down`` may overtake ordinary messages the dead actor
sent before it died.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

from actors._core._driver import TIMED_OUT, Driver, TaskHandle, TimerHandle, Waiter
from actors._core._errors import (
    ActorCrashed,
    ActorError,
    ActorStopped,
    AskTimeout,
    MailboxFull,
    NameTaken,
    NoSuchActor,
    PeerUnavailable,
)
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
from actors.log import get_logger
from actors.seams.clock import Clock
from actors.seams.random import Random

if TYPE_CHECKING:
    from actors._core._remote_hooks import RemoteHooks


# get_logger returns a lazy proxy, so a module-level logger still follows a
# configuration installed after import.
_log = get_logger("actors")


DEFAULT_MAILBOX: Final = 1024
# A busy actor yields to the scheduler after this many messages in a row, so
# one long mailbox cannot starve every other actor on the node.
_FAIRNESS_BATCH: Final = 64

# (origin node, request id): where the reply to an ask goes.
RequestKey = tuple[str, int]


class Actor:
    """Base class of every actor. Override the hooks you need.

    ``receive`` handles one message at a time; for an ask, its return value is
    the reply. An exception escaping a hook crashes the actor: its monitors get
    ``Down`` and its links an exit signal, with a :class:`CrashReport` that
    names the exception type and location but never its text.
    """

    trap_exit: ClassVar[bool] = False
    """When True, exit signals from linked actors arrive as :class:`Exit`
    messages instead of ending this actor (supervisors trap exits)."""

    async def started(self, ctx: Context) -> None:
        """Runs once, before the first message."""

    async def receive(self, ctx: Context, message: object) -> object:
        """Handle ``message``; the return value answers an ask."""
        return None

    async def stopping(self, ctx: Context, reason: ExitReason) -> None:
        """Runs when the actor stops in order (stop request, shutdown, or after
        a crash in ``receive``); not after a kill."""


class _State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class _StopRequest:
    reason: ExitReason


@dataclass(slots=True)
class SystemStats:
    """Aggregate counters (never contents) for tests, checkers and metrics."""

    spawned: int = 0
    delivered: int = 0
    crashes: int = 0
    dropped_full: int = 0
    dropped_noproc: int = 0
    late_replies: int = 0
    restarts: int = 0
    escalations: int = 0


class _Pending:
    __slots__ = ("done", "error", "node", "value", "waiter")

    def __init__(self, waiter: Waiter, node: str) -> None:
        self.waiter = waiter
        self.node = node
        self.done = False
        self.value: object = None
        self.error: ActorError | None = None


class _Cell:
    __slots__ = (
        "actor",
        "capacity",
        "ctx",
        "current_request",
        "current_sender",
        "forced_reason",
        "id",
        "label",
        "links",
        "mailbox",
        "monitored_by",
        "monitoring",
        "name",
        "parent",
        "ref",
        "send_waiters",
        "state",
        "stop_reason",
        "system_queue",
        "task",
        "trap_exit",
        "waiter",
        "watchers",
    )

    def __init__(
        self,
        system: ActorSystem,
        actor_id: int,
        actor: Actor,
        name: str | None,
        capacity: int,
        parent: ActorRef | None,
    ) -> None:
        self.id = actor_id
        self.actor = actor
        self.name = name
        self.capacity = capacity
        self.parent = parent
        self.ref = ActorRef(system.node, actor_id, name, system)
        self.label = (
            f"{system.node}/{name if name is not None else type(actor).__name__}#{actor_id}"
        )
        self.trap_exit = type(actor).trap_exit
        self.state = _State.STARTING
        self.mailbox: deque[tuple[object, ActorRef | None, RequestKey | None]] = deque()
        self.system_queue: deque[object] = deque()
        self.waiter = system.driver.new_waiter()
        self.send_waiters: deque[Waiter] = deque()
        self.watchers: list[Waiter] = []
        self.links: dict[ActorRef, None] = {}
        # Keyed by (watcher's node, monitor id): monitor ids are drawn per
        # node, so two nodes watching one actor may use the same id.
        self.monitored_by: dict[tuple[str, int], ActorRef] = {}
        self.monitoring: dict[int, ActorRef] = {}
        self.current_request: RequestKey | None = None
        self.current_sender: ActorRef | None = None
        self.stop_reason: ExitReason | None = None
        self.forced_reason: ExitReason | None = None
        self.task: TaskHandle | None = None
        self.ctx = Context(system, self)


class Context:
    """What a running actor may do: its own address, its seams, spawning,
    links, monitors, timers, stopping. Handed to every hook."""

    __slots__ = ("_cell", "_system")

    def __init__(self, system: ActorSystem, cell: _Cell) -> None:
        self._system = system
        self._cell = cell

    @property
    def self(self) -> ActorRef:
        return self._cell.ref

    @property
    def label(self) -> str:
        return self._cell.label

    @property
    def parent(self) -> ActorRef | None:
        return self._cell.parent

    @property
    def sender(self) -> ActorRef | None:
        """The sender of the message being handled, if it named one."""
        return self._cell.current_sender

    @property
    def system(self) -> ActorSystem:
        return self._system

    @property
    def node(self) -> str:
        return self._system.node

    @property
    def clock(self) -> Clock:
        return self._system.clock

    @property
    def random(self) -> Random:
        return self._system.random

    def spawn(
        self, actor: Actor, *, name: str | None = None, mailbox: int | None = None
    ) -> ActorRef:
        return self._system.spawn(actor, name=name, mailbox=mailbox, parent=self._cell.ref)

    def spawn_link(
        self, actor: Actor, *, name: str | None = None, mailbox: int | None = None
    ) -> ActorRef:
        """Spawn and link in one step, so no exit can fall between the two."""
        return self._system.spawn(
            actor, name=name, mailbox=mailbox, parent=self._cell.ref, link=True
        )

    def link(self, ref: ActorRef) -> None:
        self._system._link(self._cell, ref)

    def unlink(self, ref: ActorRef) -> None:
        self._system._unlink(self._cell, ref)

    def monitor(self, ref: ActorRef) -> int:
        """Watch ``ref``; a :class:`Down` with this id arrives once it ends."""
        return self._system._monitor(self._cell, ref)

    def demonitor(self, monitor: int) -> None:
        self._system._demonitor(self._cell, monitor)

    def stop(self, reason: ExitReason = NORMAL) -> None:
        """Stop this actor after the current message, with ``reason``."""
        if self._cell.stop_reason is None:
            self._cell.stop_reason = reason

    def send_after(self, delay: float, ref: ActorRef, message: object) -> TimerHandle:
        """Tell ``message`` to ``ref`` after ``delay`` seconds of the Clock
        (dropped if the target is gone or full by then)."""
        system = self._system
        me = self._cell.ref

        def fire() -> None:
            try:
                system.tell(ref, message, sender=me)
            except ActorError:
                system.stats.dropped_noproc += 1

        return system.driver.call_later(delay, fire)

    async def wait_started(self, ref: ActorRef) -> bool:
        return await self._system.wait_started(ref)

    async def wait_terminated(self, ref: ActorRef, timeout: float | None) -> bool:
        return await self._system.wait_terminated(ref, timeout)


class ActorSystem:
    """All actors of one node.

    Refs on other nodes reach their node once a
    :class:`~actors.remote.RemoteLayer` is attached; until then they are
    unreachable (:class:`PeerUnavailable`, ``Down(noconnection)``).
    """

    def __init__(
        self,
        node: str,
        driver: Driver,
        *,
        random: Random,
        default_mailbox: int = DEFAULT_MAILBOX,
        on_crash: Callable[[CrashReport], None] | None = None,
    ) -> None:
        self.node = node
        self.driver = driver
        self.clock: Clock = driver.clock
        self.random = random
        self.default_mailbox = default_mailbox
        self.stats = SystemStats()
        self._killed = driver.killed
        self._on_crash = on_crash
        self._cells: dict[int, _Cell] = {}
        self._names: dict[str, _Cell] = {}
        self._ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._monitor_ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        # Set by attach_remote; None: refs on other nodes are unreachable.
        self._remote: RemoteHooks | None = None

    # ------------------------------------------------------------- registry

    def whereis(self, name: str) -> ActorRef | None:
        """The live actor registered as ``name`` on this node, if any."""
        cell = self._names.get(name)
        return cell.ref if cell is not None else None

    def ref(self, node: str, name: str) -> ActorRef:
        """A name-addressed reference: resolved on ``node`` at each delivery."""
        return ActorRef(node, 0, name, self)

    def bind(self, ref: ActorRef) -> ActorRef:
        """``ref`` bound to this system (references decoded from the wire)."""
        if ref._system is self:
            return ref
        return ActorRef(ref.node, ref.actor_id, ref.name, self)

    def live_actors(self) -> list[ActorRef]:
        return [cell.ref for cell in self._cells.values()]

    def task_of(self, ref: ActorRef) -> TaskHandle | None:
        """The task running a live local actor (the simulator injects faults
        through it)."""
        cell = self._resolve(ref)
        return cell.task if cell is not None else None

    def is_alive(self, ref: ActorRef) -> bool:
        return ref.node == self.node and self._resolve(ref) is not None

    # ---------------------------------------------------------------- spawn

    def spawn(
        self,
        actor: Actor,
        *,
        name: str | None = None,
        mailbox: int | None = None,
        parent: ActorRef | None = None,
        link: bool = False,
    ) -> ActorRef:
        if name is not None and name in self._names:
            raise NameTaken(name)
        capacity = mailbox if mailbox is not None else self.default_mailbox
        if capacity < 1:
            raise ValueError("mailbox capacity must be at least 1")
        cell = _Cell(self, next(self._ids), actor, name, capacity, parent)
        self._cells[cell.id] = cell
        if name is not None:
            self._names[name] = cell
        if link and parent is not None:
            parent_cell = self._cells.get(parent.actor_id)
            if parent_cell is not None:
                parent_cell.links[cell.ref] = None
                cell.links[parent_cell.ref] = None
        self.stats.spawned += 1
        cell.task = self.driver.start(lambda: self._run_cell(cell))
        return cell.ref

    # ------------------------------------------------------------ the cell

    async def _run_cell(self, cell: _Cell) -> None:
        ctx = cell.ctx
        reason: ExitReason = NORMAL
        try:
            try:
                await cell.actor.started(ctx)
                cell.state = _State.RUNNING
                self._wake_watchers(cell)
                reason = await self._loop(cell)
            except self._killed:
                reason = cell.forced_reason if cell.forced_reason is not None else KILLED
                raise
            except Exception as exc:
                report = CrashReport.from_exception(cell.label, exc)
                del exc  # drop the traceback (and the frames' locals) promptly
                reason = ExitReason(ExitKind.CRASHED, report)
                self._crashed(cell, report)
                if cell.state is _State.RUNNING:
                    # Crashed in receive (not in started, not in stopping
                    # itself): give the actor its orderly-exit hook.
                    await self._stopping_after_crash(cell, reason)
        finally:
            self._terminated(cell, reason)

    async def _loop(self, cell: _Cell) -> ExitReason:
        actor = cell.actor
        ctx = cell.ctx
        mailbox = cell.mailbox
        system_queue = cell.system_queue
        stats = self.stats
        checkpoint = self.driver.checkpoint
        handled = 0
        reason: ExitReason
        while True:
            if cell.stop_reason is not None:
                reason = cell.stop_reason
                break
            if system_queue:
                signal = system_queue.popleft()
                if type(signal) is _StopRequest:
                    reason = signal.reason
                    break
                cell.current_sender = None
                await actor.receive(ctx, signal)
                continue
            if mailbox:
                message, sender, request = mailbox.popleft()
                while cell.send_waiters:
                    if cell.send_waiters.popleft().wake():
                        break
                cell.current_sender = sender
                cell.current_request = request
                stats.delivered += 1
                result = await actor.receive(ctx, message)
                cell.current_request = None
                if request is not None:
                    self._reply(request, result, None)
                handled += 1
                if handled >= _FAIRNESS_BATCH:
                    handled = 0
                    await checkpoint()
                continue
            handled = 0
            await cell.waiter.wait(None)
        cell.state = _State.STOPPING
        await actor.stopping(ctx, reason)
        return reason

    async def _stopping_after_crash(self, cell: _Cell, reason: ExitReason) -> None:
        cell.state = _State.STOPPING
        try:
            await cell.actor.stopping(cell.ctx, reason)
        except Exception as exc:
            # Reported by type and place only, like the crash itself.
            self._crashed(cell, CrashReport.from_exception(cell.label, exc))

    def _crashed(self, cell: _Cell, report: CrashReport) -> None:
        self.stats.crashes += 1
        if cell.current_request is not None:
            request, cell.current_request = cell.current_request, None
            self._reply(request, None, ActorCrashed(report))
        _log.warning(
            "actor_crashed",
            node=self.node,
            actor=report.actor,
            error_type=report.exc_type,
            error_location=f"{report.location} in {report.function}",
        )
        if self._on_crash is not None:
            self._on_crash(report)

    def _terminated(self, cell: _Cell, reason: ExitReason) -> None:
        """Bookkeeping when a cell ends. Synchronous on purpose: it runs even
        while the task is being cancelled, when awaiting is not possible."""
        cell.state = _State.DEAD
        del self._cells[cell.id]
        if cell.name is not None and self._names.get(cell.name) is cell:
            del self._names[cell.name]
        if cell.current_request is not None:
            self._reply(cell.current_request, None, ActorStopped(cell.ref))
            cell.current_request = None
        for _message, _sender, request in cell.mailbox:
            if request is not None:
                self._reply(request, None, ActorStopped(cell.ref))
        cell.mailbox.clear()
        cell.system_queue.clear()
        while cell.send_waiters:
            cell.send_waiters.popleft().wake()
        for monitor, target in list(cell.monitoring.items()):
            self._drop_monitor(target, monitor)
        cell.monitoring.clear()
        for other in list(cell.links):
            other_cell = self._cells.get(other.actor_id)
            if other_cell is not None:
                other_cell.links.pop(cell.ref, None)
                self._exit_signal(other_cell, cell.ref, reason)
        cell.links.clear()
        for (_node, monitor), watcher in cell.monitored_by.items():
            self._deliver_down(watcher, Down(cell.ref, reason, monitor))
        cell.monitored_by.clear()
        self._wake_watchers(cell)

    def _wake_watchers(self, cell: _Cell) -> None:
        watchers, cell.watchers = cell.watchers, []
        for waiter in watchers:
            waiter.wake()

    # ----------------------------------------------------- links, monitors

    def _exit_signal(self, cell: _Cell, source: ActorRef, reason: ExitReason) -> None:
        if cell.state is _State.DEAD:
            return
        if cell.trap_exit:
            cell.system_queue.append(Exit(source, reason))
            cell.waiter.wake()
        elif reason.abnormal:
            # Erlang semantics: a non-trapping actor dies at once with the
            # linked actor's reason, even in the middle of a handler.
            if cell.forced_reason is None:
                cell.forced_reason = reason
            if cell.task is not None:
                cell.task.kill()

    def _link(self, cell: _Cell, ref: ActorRef) -> None:
        if ref.node != self.node:
            raise ActorError("links are node-local; monitor a remote actor instead")
        other = self._resolve(ref)
        if other is None:
            self._exit_signal(cell, ref, NOPROC)
            return
        cell.links[other.ref] = None
        other.links[cell.ref] = None

    def _unlink(self, cell: _Cell, ref: ActorRef) -> None:
        other = self._resolve(ref)
        if other is not None:
            cell.links.pop(other.ref, None)
            other.links.pop(cell.ref, None)

    def _monitor(self, cell: _Cell, ref: ActorRef) -> int:
        monitor = next(self._monitor_ids)
        cell.monitoring[monitor] = ref
        if ref.node == self.node:
            target = self._resolve(ref)
            if target is None:
                self._deliver_down(cell.ref, Down(ref, NOPROC, monitor))
            else:
                cell.monitoring[monitor] = target.ref
                target.monitored_by[(self.node, monitor)] = cell.ref
        elif self._remote is None or not self._remote.monitor(cell.ref, ref, monitor):
            self._deliver_down(cell.ref, Down(ref, NOCONNECTION, monitor))
        return monitor

    def _demonitor(self, cell: _Cell, monitor: int) -> None:
        target = cell.monitoring.pop(monitor, None)
        if target is not None:
            self._drop_monitor(target, monitor)

    def _drop_monitor(self, target: ActorRef, monitor: int) -> None:
        if target.node == self.node:
            target_cell = self._resolve(target)
            if target_cell is not None:
                target_cell.monitored_by.pop((self.node, monitor), None)
        elif self._remote is not None:
            self._remote.demonitor(target, monitor)

    def _deliver_down(self, watcher: ActorRef, down: Down) -> None:
        if watcher.node != self.node:
            if self._remote is not None:
                self._remote.send_down(watcher, down)
            return
        cell = self._cells.get(watcher.actor_id)
        if cell is None or cell.monitoring.pop(down.monitor, None) is None:
            return
        cell.system_queue.append(down)
        cell.waiter.wake()

    # The next four, _fail_pending_to and _complete (with a node) are the
    # inbound side of remote messaging: the remote layer reaches them only
    # through its RemoteInbox.

    def _deliver_down_from(self, watcher: ActorRef, down: Down) -> None:
        """A ``Down`` from another node for a local watcher; honoured only for
        a monitor whose target lives on the node the ``Down`` came from."""
        cell = self._cells.get(watcher.actor_id)
        if cell is None:
            return
        target = cell.monitoring.get(down.monitor)
        if target is not None and target.node == down.ref.node:
            self._deliver_down(watcher, down)

    def _remote_monitors_lost(self, node: str) -> None:
        """Every local monitor of an actor on ``node`` gets ``Down(noconnection)``."""
        for cell in list(self._cells.values()):
            for monitor, target in list(cell.monitoring.items()):
                if target.node == node:
                    self._deliver_down(cell.ref, Down(target, NOCONNECTION, monitor))

    def _add_remote_monitor(self, watcher: ActorRef, target: ActorRef, monitor: int) -> None:
        """A watcher on another node monitors a local actor."""
        cell = self._resolve(target)
        if cell is None:
            self._deliver_down(watcher, Down(target, NOPROC, monitor))
        else:
            cell.monitored_by[(watcher.node, monitor)] = watcher

    def _remove_remote_monitors(self, node: str, monitor: int | None = None) -> None:
        """Forget monitors held by watchers on ``node`` (one, or all of them)."""
        for cell in self._cells.values():
            for key in list(cell.monitored_by):
                if key[0] == node and (monitor is None or key[1] == monitor):
                    del cell.monitored_by[key]

    # --------------------------------------------------- stop, kill, wait

    def stop(self, ref: ActorRef, reason: ExitReason = SHUTDOWN) -> None:
        """Ask a local actor to stop after its current message (runs ``stopping``)."""
        cell = self._resolve(ref)
        if cell is not None:
            cell.system_queue.append(_StopRequest(reason))
            cell.waiter.wake()

    def kill(self, ref: ActorRef, reason: ExitReason = KILLED) -> None:
        """Cancel a local actor where it is; its ``stopping`` hook does not run."""
        cell = self._resolve(ref)
        if cell is not None and cell.task is not None:
            if cell.forced_reason is None:
                cell.forced_reason = reason
            cell.task.kill()

    async def wait_started(self, ref: ActorRef) -> bool:
        """Wait until a local actor's ``started`` hook returned (True) or it
        ended first (False)."""
        cell = self._cells.get(ref.actor_id)
        while cell is not None and cell.state is _State.STARTING:
            waiter = self.driver.new_waiter()
            cell.watchers.append(waiter)
            await waiter.wait(None)
        return cell is not None and cell.state is not _State.DEAD

    async def wait_terminated(self, ref: ActorRef, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: no limit) for a local actor to
        end; True once it has."""
        cell = self._cells.get(ref.actor_id)
        if cell is None:
            return True
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        while cell.state is not _State.DEAD:
            remaining = None if deadline is None else deadline - self.clock.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            waiter = self.driver.new_waiter()
            cell.watchers.append(waiter)
            if await waiter.wait(remaining) is TIMED_OUT and waiter in cell.watchers:
                cell.watchers.remove(waiter)
        return True

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every actor that has no parent, newest first, then kill the rest."""
        roots = [cell.ref for cell in self._cells.values() if cell.parent is None]
        for ref in reversed(roots):
            self.stop(ref)
            if not await self.wait_terminated(ref, timeout):
                self.kill(ref)
                await self.wait_terminated(ref, None)
        for cell in list(self._cells.values()):
            self.kill(cell.ref)
        for ref in [cell.ref for cell in self._cells.values()]:
            await self.wait_terminated(ref, None)

    # -------------------------------------------------------- messaging

    def _resolve(self, ref: ActorRef) -> _Cell | None:
        cell = self._cells.get(ref.actor_id) if ref.actor_id else self._names.get(ref.name or "")
        if cell is None or cell.state is _State.DEAD:
            return None
        return cell

    def tell(self, ref: ActorRef, message: object, *, sender: ActorRef | None = None) -> None:
        if ref.node == self.node:
            self._deliver_local(ref, message, sender, None)
        elif self._remote is None:
            raise PeerUnavailable(ref.node)
        else:
            self._remote.send_tell(ref, message, sender)

    def _deliver_local(
        self,
        ref: ActorRef,
        message: object,
        sender: ActorRef | None,
        request: RequestKey | None,
    ) -> None:
        """Enqueue into a local mailbox or raise (NoSuchActor, MailboxFull)."""
        cell = self._resolve(ref)
        if cell is None:
            raise NoSuchActor(ref)
        if len(cell.mailbox) >= cell.capacity:
            raise MailboxFull(ref)
        cell.mailbox.append((message, sender, request))
        cell.waiter.wake()

    async def send(self, ref: ActorRef, message: object, *, sender: ActorRef | None = None) -> None:
        if ref.node != self.node:
            self.tell(ref, message, sender=sender)
            return
        while True:
            cell = self._resolve(ref)
            if cell is None:
                raise NoSuchActor(ref)
            if len(cell.mailbox) < cell.capacity:
                cell.mailbox.append((message, sender, None))
                cell.waiter.wake()
                return
            waiter = self.driver.new_waiter()
            cell.send_waiters.append(waiter)
            try:
                await waiter.wait(None)
            finally:
                if waiter in cell.send_waiters:
                    cell.send_waiters.remove(waiter)

    async def ask(
        self,
        ref: ActorRef,
        message: object,
        timeout: float,
        *,
        sender: ActorRef | None = None,
    ) -> Any:
        request_id = next(self._request_ids)
        pending = _Pending(self.driver.new_waiter(), ref.node)
        self._pending[request_id] = pending
        try:
            if ref.node == self.node:
                self._deliver_local(ref, message, sender, (self.node, request_id))
            elif self._remote is None:
                raise PeerUnavailable(ref.node)
            else:
                self._remote.send_ask(ref, message, sender, request_id)
            if (
                not pending.done
                and await pending.waiter.wait(timeout) is TIMED_OUT
                and not pending.done
            ):
                raise AskTimeout(ref, timeout)
            if pending.error is not None:
                raise pending.error
            return pending.value
        finally:
            del self._pending[request_id]

    def _reply(self, request: RequestKey, value: object, error: ActorError | None) -> None:
        node, request_id = request
        if node == self.node:
            self._complete(request_id, value, error)
        elif self._remote is not None:
            self._remote.send_reply(node, request_id, value, error)

    def _complete(
        self,
        request_id: int,
        value: object,
        error: ActorError | None,
        *,
        node: str | None = None,
    ) -> None:
        """Settle the pending ask ``request_id`` (a reply arrived or it failed).

        ``node`` is the authenticated peer a remote reply came from: it may
        only settle asks that were sent to that node.
        """
        pending = self._pending.get(request_id)
        if pending is None or pending.done or (node is not None and pending.node != node):
            self.stats.late_replies += 1
            return
        pending.done = True
        pending.value = value
        pending.error = error
        pending.waiter.wake()

    def _fail_pending_to(self, node: str) -> None:
        """Every ask waiting on ``node`` fails with :class:`PeerUnavailable`."""
        for request_id, pending in list(self._pending.items()):
            if pending.node == node and not pending.done:
                self._complete(request_id, None, PeerUnavailable(node))


class RemoteInbox:
    """The remote layer's only way into an :class:`ActorSystem`: what arrives
    from other nodes, already checked against the authenticated peer by the
    layer. Obtained from :func:`attach_remote`; not a public API."""

    __slots__ = ("_system",)

    def __init__(self, system: ActorSystem) -> None:
        self._system = system

    def deliver(
        self,
        target: ActorRef,
        message: object,
        sender: ActorRef | None,
        request: RequestKey | None,
    ) -> None:
        """Enqueue into a local mailbox or raise (NoSuchActor, MailboxFull)."""
        self._system._deliver_local(target, message, sender, request)

    def complete(
        self, request_id: int, value: object, error: ActorError | None, *, node: str
    ) -> None:
        """Settle a local ask with a reply (or failure) from peer ``node``."""
        self._system._complete(request_id, value, error, node=node)

    def add_monitor(self, watcher: ActorRef, target: ActorRef, monitor: int) -> None:
        """A watcher on another node monitors a local actor."""
        self._system._add_remote_monitor(watcher, target, monitor)

    def remove_monitors(self, node: str, monitor: int | None = None) -> None:
        """Forget monitors held by watchers on ``node`` (one, or all of them)."""
        self._system._remove_remote_monitors(node, monitor)

    def deliver_down(self, watcher: ActorRef, down: Down) -> None:
        """A ``Down`` from the target's node for a local watcher."""
        self._system._deliver_down_from(watcher, down)

    def peer_lost(self, node: str) -> None:
        """The link to ``node`` is gone: its pending asks fail, local monitors
        of its actors fire ``Down(noconnection)``, its watchers are forgotten."""
        system = self._system
        system._fail_pending_to(node)
        system._remote_monitors_lost(node)
        system._remove_remote_monitors(node)


def attach_remote(system: ActorSystem, hooks: RemoteHooks) -> RemoteInbox:
    """Route ``system``'s refs on other nodes through ``hooks`` (the remote
    layer) and give the layer its :class:`RemoteInbox`.

    A module function rather than a method, so that :class:`ActorSystem`
    carries nothing remote-specific in its public interface.
    """
    system._remote = hooks
    return RemoteInbox(system)


__all__ = [
    "DEFAULT_MAILBOX",
    "Actor",
    "ActorSystem",
    "Context",
    "RemoteInbox",
    "SystemStats",
    "attach_remote",
]
