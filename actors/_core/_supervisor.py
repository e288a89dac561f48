"""Supervisors with Erlang/OTP semantics.

A supervisor is an ordinary actor (it traps exits and is linked to each
child), so the same code supervises in the daemon and in the simulator.

Rules, as in OTP's ``supervisor`` module:

* Children start in the order given; each child's ``started`` hook finishes
  before the next child is spawned. A child failing to start during the
  supervisor's own start makes the supervisor stop its started children and
  fail.
* When a child ends, its restart type decides whether it is restarted:

  ============  ======================  =================================
  restart       normal / shutdown exit  any other exit (crash, kill, ...)
  ============  ======================  =================================
  permanent     restart                 restart
  transient     keep spec, no restart   restart
  temporary     drop spec               drop spec
  ============  ======================  =================================

* What is restarted depends on the strategy: ``one_for_one`` the child alone;
  ``one_for_all`` every child (the others are shut down first, in reverse
  order); ``rest_for_one`` the child and those started after it.
  Temporary children shut down as a side effect are dropped, not restarted.
* More than ``intensity`` restarts within ``period`` seconds (Clock time) and
  the supervisor gives up: it shuts down all children in reverse order and
  exits with reason ``escalated``, which its own supervisor sees as an
  abnormal child exit.
* Shutting a child down: a stop request (the child's ``stopping`` hook runs),
  then up to ``shutdown`` seconds for it to end, then cancellation.
  ``shutdown=0`` cancels at once (OTP's brutal_kill); ``None`` waits forever
  (the usual choice for child supervisors).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actors._core._system import Actor, Context
from actors._core._types import SHUTDOWN, ActorRef, Exit, ExitKind, ExitReason
from actors.log import get_logger

# get_logger returns a lazy proxy, so a module-level logger still follows a
# configuration installed after import.
_log = get_logger("actors.supervisor")


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child. ``start`` builds a fresh
    actor for every (re)start; state does not survive a restart."""

    id: str
    start: Callable[[], Actor]
    restart: Restart = Restart.PERMANENT
    shutdown: float | None = 5.0
    name: str | None = None
    mailbox: int | None = None


@dataclass(frozen=True, slots=True)
class WhichChildren:
    """Ask a supervisor for ``((child id, ref or None), ...)`` in start order."""


class SupervisorStartError(Exception):
    """A child failed to start while its supervisor was starting."""

    def __init__(self, child_id: str) -> None:
        super().__init__(f"child {child_id!r} failed to start")
        self.child_id = child_id


class _Child:
    __slots__ = ("ref", "spec")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.ref: ActorRef | None = None


class Supervisor(Actor):
    trap_exit = True

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 3,
        period: float = 5.0,
    ) -> None:
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ValueError("child ids must be unique within a supervisor")
        if intensity < 0 or period <= 0:
            raise ValueError("intensity must be >= 0 and period > 0")
        self._children = [_Child(spec) for spec in children]
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self._restarts: list[float] = []

    # ------------------------------------------------------------ lifecycle

    async def started(self, ctx: Context) -> None:
        for position, child in enumerate(self._children):
            if not await self._start(ctx, child):
                child.ref = None
                await self._terminate_all(ctx, self._children[:position])
                raise SupervisorStartError(child.spec.id)

    async def stopping(self, ctx: Context, reason: ExitReason) -> None:
        await self._terminate_all(ctx, self._children)

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Exit):
            await self._exit(ctx, message)
            return None
        if isinstance(message, WhichChildren):
            return tuple((child.spec.id, child.ref) for child in self._children)
        return None

    # -------------------------------------------------------------- helpers

    async def _start(self, ctx: Context, child: _Child) -> bool:
        spec = child.spec
        ref = ctx.spawn_link(spec.start(), name=spec.name, mailbox=spec.mailbox)
        child.ref = ref
        # On failure the ref stays: the child's Exit is then handled (and
        # counted against the intensity) like any other child exit.
        return await ctx.wait_started(ref)

    async def _terminate(self, ctx: Context, child: _Child) -> None:
        ref = child.ref
        if ref is None:
            return
        child.ref = None
        system = ctx.system
        ctx.unlink(ref)
        timeout = child.spec.shutdown
        if timeout is not None and timeout <= 0:
            system.kill(ref)
        else:
            system.stop(ref, SHUTDOWN)
            if not await system.wait_terminated(ref, timeout):
                system.kill(ref)
        await system.wait_terminated(ref, None)

    async def _terminate_all(self, ctx: Context, children: Sequence[_Child]) -> None:
        for child in reversed(children):
            await self._terminate(ctx, child)

    def _note_restart(self, ctx: Context) -> bool:
        """Record a restart; False if it exceeds the intensity within the period."""
        now = ctx.clock.monotonic()
        horizon = now - self.period
        # Inclusive, as in OTP: a restart exactly ``period`` ago still counts
        # (virtual time in the simulator makes exact ties ordinary).
        self._restarts = [t for t in self._restarts if t >= horizon]
        self._restarts.append(now)
        return len(self._restarts) <= self.intensity

    async def _exit(self, ctx: Context, message: Exit) -> None:
        if message.ref == ctx.parent:
            # Our parent ended: stop in order, taking the children with us.
            ctx.stop(message.reason if message.reason.abnormal else SHUTDOWN)
            return
        position = next(
            (i for i, child in enumerate(self._children) if child.ref == message.ref), None
        )
        if position is None:
            return  # a child we already shut down, or a stranger
        child = self._children[position]
        child.ref = None
        restart = child.spec.restart
        reason = message.reason
        if restart is Restart.TEMPORARY:
            del self._children[position]
            return
        if restart is Restart.TRANSIENT and not reason.abnormal:
            return
        if not self._note_restart(ctx):
            _log.error(
                "supervisor_gave_up",
                node=ctx.node,
                supervisor=ctx.label,
                child=child.spec.id,
                restarts=len(self._restarts),
                strategy=self.strategy.value,
            )
            ctx.system.stats.escalations += 1
            await self._terminate_all(ctx, self._children)
            ctx.stop(ExitReason(ExitKind.ESCALATED))
            return
        _log.info(
            "child_restarting",
            node=ctx.node,
            supervisor=ctx.label,
            child=child.spec.id,
            reason=reason.kind.value,
            strategy=self.strategy.value,
        )
        ctx.system.stats.restarts += 1
        if self.strategy is Strategy.ONE_FOR_ONE:
            affected = [child]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            affected = list(self._children)
        else:
            affected = self._children[position:]
        await self._terminate_all(ctx, affected)
        for other in affected:
            if other is not child and other.spec.restart is Restart.TEMPORARY:
                self._children.remove(other)
        for other in affected:
            if other in self._children:
                # A child that dies in its started hook shows up as another
                # Exit, which goes through this same accounting.
                await self._start(ctx, other)
