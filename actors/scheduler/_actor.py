"""The scheduler actor: the registry of inference nodes, the per-model queues,
placement, retry and the end of every admitted request."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from actors import Actor, ActorError, ActorRef, Context, Down, ExitReason, PeerUnavailable
from actors.inference import ATTESTOR_NAME, WORKER_NAME
from actors.lowlevel import TimerHandle
from actors.scheduler._api import (
    ModelListing,
    NoCapacity,
    Overloaded,
    PeerKeys,
    Replayed,
    SealedRecord,
    UnknownModel,
)
from protocol.attestation import noise_key_binding
from protocol.e2e import SealedRequest
from protocol.inference import GenerateDone, GenerateRequest
from protocol.messages import ErrorCode, ErrorReply
from protocol.scheduling import (
    ID_SIZE,
    AttemptChunk,
    AttemptDone,
    AttemptFailed,
    AttemptRecord,
    CancelAttempt,
    Heartbeat,
    JoinAccepted,
    JoinScheduler,
    LeaveScheduler,
    PlaceAttempt,
    PlaceSealed,
    Rejoin,
)

if TYPE_CHECKING:
    from actors.scheduler._dispatcher import SchedulerSubmission

#: The registered name of the scheduler on an ingress node.
SCHEDULER_NAME: Final = "scheduler"
#: A node silent for this many heartbeat intervals is dropped.
MISSED_HEARTBEATS: Final = 3
#: Longest tenant id the scheduler queues under.
MAX_TENANT_LEN: Final = 128
#: Most nodes :class:`ListNodes` names (a sealed request has at most 16
#: envelopes, so a client needs no more candidates than that).
MAX_LISTED_NODES: Final = 16


@dataclasses.dataclass(frozen=True, slots=True)
class SchedulerLimits:
    """The scheduler's bounds (every queue and registry is bounded).

    ``max_queued`` requests wait per model, at most ``max_queued_per_tenant``
    of them from one tenant (so one tenant's burst cannot fill the queue
    before another's request arrives); beyond either, admission answers
    :class:`Overloaded` with ``retry_after`` at once. A request is placed at
    most ``max_attempts`` times when nodes die before it streamed.
    """

    max_queued: int = 256
    max_queued_per_tenant: int = 64
    max_attempts: int = 3
    heartbeat_interval: float = 1.0
    retry_after: float = 1.0
    max_models: int = 64
    max_nodes: int = 1024
    #: Sealed request ids remembered, so a replayed one is refused.
    remembered_requests: int = 65536

    def __post_init__(self) -> None:
        if not 1 <= self.max_queued_per_tenant <= self.max_queued:
            raise ValueError("queue limits must satisfy 1 <= per tenant <= per model")
        if (
            self.max_attempts < 1
            or self.max_models < 1
            or self.max_nodes < 1
            or self.remembered_requests < 1
        ):
            raise ValueError("attempts, models, nodes and remembered ids must be at least 1")
        for value in (self.heartbeat_interval, self.retry_after):
            if not (math.isfinite(value) and value > 0):
                raise ValueError("intervals must be positive seconds")


@dataclasses.dataclass(slots=True)
class SchedulerStats:
    """Aggregate counters (never contents) for tests, checkers and metrics."""

    admitted: int = 0
    refused: int = 0
    completed: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    placements: int = 0
    retries: int = 0
    nodes_joined: int = 0
    nodes_lost: int = 0
    replies_ignored: int = 0
    replays_refused: int = 0

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.expired + self.cancelled


class ClusterDirectory:
    """What the scheduler publishes for :class:`SchedulerDispatcher` to read
    synchronously (the model listing), and what outlives one incarnation of
    the actor: the submissions still open (a restarted scheduler ends them)
    and the counters."""

    def __init__(self, known_models: Iterable[str] = ()) -> None:
        self.configured = frozenset(known_models)
        self.listings: tuple[ModelListing, ...] = ()
        self.open: dict[int, SchedulerSubmission] = {}
        self.stats = SchedulerStats()
        # Sealed request ids admitted, oldest first: kept across restarts of
        # the actor, so a replay is refused by every incarnation.
        self.seen: deque[bytes] = deque()
        self.seen_set: set[bytes] = set()
        self.publish({})

    def first_sight(self, request_id: bytes, limit: int) -> bool:
        """Remember ``request_id``; whether it was new."""
        if request_id in self.seen_set:
            return False
        self.seen.append(request_id)
        self.seen_set.add(request_id)
        while len(self.seen) > limit:
            self.seen_set.discard(self.seen.popleft())
        return True

    def publish(self, serving: dict[str, int], known: Iterable[str] = ()) -> None:
        models = sorted(self.configured.union(known))
        self.listings = tuple(ModelListing(model, serving.get(model, 0)) for model in models)


# ---------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True, slots=True)
class Admit:
    """Local command from the dispatcher: queue ``request`` for ``submission``.
    Answered with ``None`` (admitted) or the :class:`AdmissionError` to raise."""

    request: GenerateRequest | SealedRequest
    tenant: str
    deadline: float
    submission: SchedulerSubmission


@dataclasses.dataclass(frozen=True, slots=True)
class Abandon:
    """Local command: the submission's reader went away (or gave up waiting)."""

    submission: int


@dataclasses.dataclass(frozen=True, slots=True)
class ListNodes:
    """Local command from the dispatcher: the nodes serving ``model`` now
    (answered with a tuple of :class:`ServingNode`, at most
    :data:`MAX_LISTED_NODES`, or :class:`UnknownModel`)."""

    model: str


@dataclasses.dataclass(frozen=True, slots=True)
class ServingNode:
    """A joined node of a model and its attestor (where ``sched.attest`` goes)."""

    name: str
    attestor: ActorRef


@dataclasses.dataclass(frozen=True, slots=True)
class _Expire:
    submission: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Sweep:
    pass


# ------------------------------------------------------------------ state


class _Request:
    __slots__ = (
        "attempt",
        "attempts",
        "candidates",
        "deadline",
        "model",
        "next_chunk",
        "node",
        "placed_at",
        "request",
        "submission",
        "tenant",
        "timer",
        "tokens",
    )

    def __init__(
        self,
        submission: SchedulerSubmission,
        request: GenerateRequest | SealedRequest,
        tenant: str,
        deadline: float,
    ) -> None:
        self.submission = submission
        self.request = request
        self.model = request.model
        #: A sealed request's envelopes' key bindings: the only nodes it may
        #: be placed on (``None``: a plain request, any node of the model).
        self.candidates = request.nodes if isinstance(request, SealedRequest) else None
        self.tenant = tenant
        self.deadline = deadline
        self.attempts = 0
        self.attempt: bytes | None = None
        self.node: _Node | None = None
        self.placed_at = 0.0
        self.next_chunk = 0
        self.tokens = 0
        self.timer: TimerHandle | None = None

    @property
    def streamed(self) -> bool:
        return self.next_chunk > 0


class _Node:
    __slots__ = (
        "binding",
        "last_seen",
        "membership",
        "model",
        "monitor",
        "name",
        "running",
        "saturated",
        "session",
        "slots",
        "worker",
    )

    def __init__(
        self,
        join: JoinScheduler,
        membership: ActorRef,
        monitor: int,
        worker: ActorRef,
        now: float,
        binding: bytes | None,
    ) -> None:
        self.name = membership.node
        #: The key binding of the link's authenticated static key when the
        #: node joined (``None``: unknown, so no sealed request goes there).
        self.binding = binding
        self.session = join.session
        self.model = join.model
        self.slots = join.slots
        self.membership = membership
        self.monitor = monitor
        self.worker = worker
        self.last_seen = now
        self.saturated = False
        # attempt id -> its request, or None once the scheduler abandoned it
        # (cancelled or expired): the slot stays taken until the node ends it.
        self.running: dict[bytes, _Request | None] = {}

    @property
    def free(self) -> int:
        return 0 if self.saturated else max(0, self.slots - len(self.running))


class _ModelQueue:
    """One model's waiting requests: a FIFO per tenant, served round robin
    across tenants (the tenant served goes to the back of the ring)."""

    __slots__ = ("size", "tenants")

    def __init__(self) -> None:
        # Insertion-ordered: the first key is the tenant served next.
        self.tenants: dict[str, deque[_Request]] = {}
        self.size = 0

    def queued_for(self, tenant: str) -> int:
        queue = self.tenants.get(tenant)
        return len(queue) if queue is not None else 0

    def push(self, request: _Request, *, front: bool = False) -> None:
        queue = self.tenants.setdefault(request.tenant, deque())
        if front:
            queue.appendleft(request)
        else:
            queue.append(request)
        self.size += 1

    def pop(self, fits: Callable[[_Request], bool]) -> _Request | None:
        """The head of the first tenant, in ring order, whose head ``fits``
        (a sealed request waits for its own candidates without holding up
        other tenants; each tenant's queue stays FIFO)."""
        for tenant, queue in self.tenants.items():  # noqa: B007 (used after the loop)
            if fits(queue[0]):
                break
        else:
            return None
        del self.tenants[tenant]
        request = queue.popleft()
        if queue:
            self.tenants[tenant] = queue
        self.size -= 1
        return request

    def remove(self, request: _Request) -> bool:
        queue = self.tenants.get(request.tenant)
        if queue is None or request not in queue:
            return False
        queue.remove(request)
        if not queue:
            del self.tenants[request.tenant]
        self.size -= 1
        return True


# ------------------------------------------------------------------ actor


class SchedulerActor(Actor):
    """The scheduler of one ingress node (registered as ``"scheduler"``).

    It holds no customer data beyond the requests it is placing, never logs
    or reports them, and ends every request it admitted (I7): with the node's
    ``GenerateDone``, the node's error, or its own explicit ``ErrorReply``
    (``DEADLINE_EXCEEDED``, ``UNAVAILABLE``). ``directory`` is shared with
    the :class:`~actors.scheduler.SchedulerDispatcher` that submits to it, so
    a supervisor builds each incarnation with ``dispatcher.actor``.
    """

    def __init__(
        self,
        directory: ClusterDirectory,
        limits: SchedulerLimits,
        peer_keys: PeerKeys | None = None,
    ) -> None:
        self._directory = directory
        self._limits = limits
        self._peer_keys = peer_keys
        self._stats = directory.stats
        self._nodes: dict[str, _Node] = {}
        self._queues: dict[str, _ModelQueue] = {}
        self._requests: dict[int, _Request] = {}
        self._known: set[str] = set(directory.configured)
        # When the sweep's timer is due. Timers are messages, dropped at a full
        # mailbox: one that is overdue by a whole interval was lost, and the
        # next message runs the sweep (which arms the timer again).
        self._sweep_due = 0.0

    # -------------------------------------------------------------- hooks

    async def started(self, ctx: Context) -> None:
        # Submissions a previous incarnation admitted are lost with its
        # state: they end now, explicitly, rather than at their deadline.
        self._end_orphans()
        self._publish()
        self._arm_sweep(ctx)

    async def stopping(self, ctx: Context, reason: ExitReason) -> None:
        for node in list(self._nodes.values()):
            for attempt in node.running:
                self._cancel_on(node, attempt, ctx)
        self._nodes.clear()
        self._end_orphans()
        self._publish()

    async def receive(self, ctx: Context, message: object) -> object:
        sender = ctx.sender
        if ctx.clock.monotonic() > self._sweep_due + self._limits.heartbeat_interval:
            self._sweep(ctx)  # its timer was dropped at a full mailbox
        if isinstance(message, Admit):
            return self._admit(ctx, message)
        if isinstance(message, ListNodes):
            return self._list(ctx, message)
        if isinstance(message, Abandon | _Expire):
            self._abandon(ctx, message.submission, expired=isinstance(message, _Expire))
        elif isinstance(message, Down):
            self._down(ctx, message)
        elif isinstance(message, _Sweep):
            self._sweep(ctx)
        elif sender is None:
            self._stats.replies_ignored += 1
        elif isinstance(message, AttemptChunk):
            self._chunk(ctx, sender, message)
        elif isinstance(message, AttemptRecord):
            self._record(ctx, sender, message)
        elif isinstance(message, AttemptDone | AttemptFailed):
            self._attempt_ended(ctx, sender, message)
        elif isinstance(message, Heartbeat):
            self._heartbeat(ctx, sender, message)
        elif isinstance(message, JoinScheduler):
            self._join(ctx, sender, message)
        elif isinstance(message, LeaveScheduler):
            node = self._nodes.get(sender.node)
            if node is not None and node.session == message.session:
                self._drop_node(ctx, node)
                self._pump(ctx, node.model)
        return None

    # ---------------------------------------------------------- admission

    def _admit(self, ctx: Context, command: Admit) -> object:
        limits = self._limits
        model = command.request.model
        if model not in self._known:
            self._stats.refused += 1
            return UnknownModel()
        request_id: bytes | None = None
        if isinstance(command.request, SealedRequest):
            candidates = command.request.nodes
            if not any(
                node.model == model and self._may_hold(node, candidates)
                for node in self._nodes.values()
            ):
                self._stats.refused += 1
                return NoCapacity()
            request_id = command.request.request_id
        elif not any(node.model == model for node in self._nodes.values()):
            self._stats.refused += 1
            return NoCapacity()
        queue = self._queues.setdefault(model, _ModelQueue())
        if (
            queue.size >= limits.max_queued
            or queue.queued_for(command.tenant) >= limits.max_queued_per_tenant
        ):
            self._stats.refused += 1
            return Overloaded(limits.retry_after)
        if request_id is not None and not self._directory.first_sight(
            request_id, limits.remembered_requests
        ):
            # Placed again, it would be answered again under the same request
            # key: never. (Remembered only once admitted, so a request refused
            # for a full queue may come again.)
            self._stats.refused += 1
            self._stats.replays_refused += 1
            return Replayed()
        submission = command.submission
        request = _Request(submission, command.request, command.tenant, command.deadline)
        self._requests[submission.id] = request
        self._directory.open[submission.id] = submission
        self._stats.admitted += 1
        request.timer = ctx.send_after(
            max(0.0, command.deadline - ctx.clock.monotonic()), ctx.self, _Expire(submission.id)
        )
        queue.push(request)
        self._pump(ctx, model)
        return None

    def _abandon(self, ctx: Context, submission: int, *, expired: bool) -> None:
        request = self._requests.get(submission)
        if request is None:
            return
        node, attempt = request.node, request.attempt
        if node is not None and attempt is not None:
            # The slot stays taken until the node says the attempt ended.
            node.running[attempt] = None
            self._cancel_on(node, attempt, ctx)
        else:
            self._queues[request.model].remove(request)
        if expired:
            self._stats.expired += 1
            self._end(request, ErrorReply(ErrorCode.DEADLINE_EXCEEDED, False))
        else:
            self._stats.cancelled += 1
            self._end(request, ErrorReply(ErrorCode.CANCELLED, False))

    # ---------------------------------------------------------- placement

    def _may_hold(self, node: _Node, candidates: frozenset[bytes] | None) -> bool:
        """Whether a request sealed for ``candidates`` may go to ``node``: its
        binding is among them and its link still has the key it joined with
        (a plain request, ``None``, may go to any node of its model)."""
        if candidates is None:
            return True
        if node.binding is None or node.binding not in candidates or self._peer_keys is None:
            return False
        current = self._peer_keys(node.name)
        return current is not None and noise_key_binding(current) == node.binding

    def _pump(self, ctx: Context, model: str) -> None:
        """Place waiting requests of ``model`` while a node has a free slot
        (for a sealed request: a free node it was sealed for)."""
        queue = self._queues.get(model)
        while queue is not None and queue.size:
            free = [n for n in self._nodes.values() if n.model == model and n.free]
            if not free:
                return
            request = queue.pop(functools.partial(self._fits_any, free))
            if request is None:
                return
            node = self._best(free, request)
            assert node is not None
            self._place(ctx, request, node)

    def _fits_any(self, free: list[_Node], request: _Request) -> bool:
        return self._best(free, request) is not None

    def _best(self, free: list[_Node], request: _Request) -> _Node | None:
        """Of the ``free`` nodes, the one ``request`` goes to: most free
        slots first, the name breaking ties (reproducible runs)."""
        fitting = [n for n in free if self._may_hold(n, request.candidates)]
        return min(fitting, key=lambda n: (-n.free, n.name)) if fitting else None

    def _place(self, ctx: Context, request: _Request, node: _Node) -> None:
        attempt = ctx.random.token_bytes(ID_SIZE)
        while attempt in node.running:
            attempt = ctx.random.token_bytes(ID_SIZE)
        placement: PlaceAttempt | PlaceSealed
        if isinstance(request.request, SealedRequest):
            if not self._may_hold(node, request.candidates):
                # Never reached through _pump; checked here, where it is sent.
                self._stats.failed += 1
                self._end(request, ErrorReply(ErrorCode.UNAVAILABLE, False))
                return
            placement = PlaceSealed(attempt, request.request)
        else:
            placement = PlaceAttempt(attempt, request.request)
        try:
            node.worker.tell(placement, sender=ctx.self)
        except PeerUnavailable:
            # The link went before its Down arrived: the node is gone.
            self._queues[request.model].push(request, front=True)
            self._drop_node(ctx, node)
            return
        except ActorError:
            # NotSendable (a request too large for a link frame) or a full
            # local mailbox: nothing reached a node, nothing will.
            self._stats.failed += 1
            self._end(request, ErrorReply(ErrorCode.BAD_REQUEST, False))
            return
        self._stats.placements += 1
        request.attempts += 1
        request.attempt = attempt
        request.node = node
        request.placed_at = ctx.clock.monotonic()
        request.next_chunk = 0
        request.tokens = 0
        node.running[attempt] = request

    def _unplace(self, ctx: Context, request: _Request, *, count: bool = True) -> None:
        """``request``'s attempt ended without an answer: place it again
        (front of its tenant's queue) if it has not streamed and attempts
        remain, else end it ``UNAVAILABLE`` (retryable only if nothing was
        streamed)."""
        request.node = None
        request.attempt = None
        if not count:
            request.attempts -= 1
        if not request.streamed and request.attempts < self._limits.max_attempts:
            self._stats.retries += count
            self._queues.setdefault(request.model, _ModelQueue()).push(request, front=True)
            return
        self._stats.failed += 1
        self._end(request, ErrorReply(ErrorCode.UNAVAILABLE, not request.streamed))

    # ------------------------------------------------------------ replies

    def _attempt_of(self, sender: ActorRef, attempt: bytes) -> tuple[_Node, _Request | None] | None:
        """The node and request of ``attempt``, if it was placed on the node
        ``sender`` speaks for (a node can only answer for its own attempts)."""
        node = self._nodes.get(sender.node)
        if node is None or attempt not in node.running:
            self._stats.replies_ignored += 1
            return None
        return node, node.running[attempt]

    def _chunk(self, ctx: Context, sender: ActorRef, message: AttemptChunk) -> None:
        found = self._attempt_of(sender, message.attempt)
        if found is None:
            return
        node, request = found
        if request is None:
            return
        if request.candidates is not None:
            # Plaintext for a sealed request: not what the client can open.
            self._gap(ctx, node, request, message.attempt)
            return
        if message.index < request.next_chunk:
            self._stats.replies_ignored += 1  # a duplicated frame
            return
        if message.index > request.next_chunk:
            # A chunk was lost between the node and here: the completion
            # cannot be delivered whole, so it ends explicitly.
            self._gap(ctx, node, request, message.attempt)
            return
        tokens = request.tokens + message.chunk.tokens
        limit = request.request.max_tokens
        if request.next_chunk > limit or tokens > limit:
            # More than the request allows (every chunk but a final flush
            # carries a token): a node streaming without end would fill the
            # submission, and the ingress, without bound. It ends here.
            self._gap(ctx, node, request, message.attempt)
            return
        request.next_chunk += 1
        request.tokens = tokens
        request.submission.push(message.chunk)

    def _record(self, ctx: Context, sender: ActorRef, message: AttemptRecord) -> None:
        """A sealed record: relayed in order; the final one ends the attempt."""
        found = self._attempt_of(sender, message.attempt)
        if found is None:
            return
        node, request = found
        if request is None:
            if message.final:
                del node.running[message.attempt]
                node.saturated = False
                self._pump(ctx, node.model)
            return
        if request.candidates is None:
            self._gap(ctx, node, request, message.attempt)
            return
        if message.index < request.next_chunk:
            self._stats.replies_ignored += 1  # a duplicated frame
            return
        # At most max_tokens + 1 chunk records (every chunk but a final flush
        # carries a token) and the final record.
        if message.index > request.next_chunk or message.index > request.request.max_tokens + 1:
            self._gap(ctx, node, request, message.attempt)
            return
        request.next_chunk += 1
        if not message.final:
            request.submission.push(SealedRecord(message.record))
            return
        del node.running[message.attempt]
        node.saturated = False
        self._stats.completed += 1
        self._end(request, SealedRecord(message.record))
        self._pump(ctx, node.model)

    def _attempt_ended(
        self, ctx: Context, sender: ActorRef, message: AttemptDone | AttemptFailed
    ) -> None:
        found = self._attempt_of(sender, message.attempt)
        if found is None:
            return
        node, request = found
        del node.running[message.attempt]
        if not (isinstance(message, AttemptFailed) and message.error.code is ErrorCode.OVERLOADED):
            node.saturated = False  # the node just ended an attempt: a slot is free
        if request is not None:
            if isinstance(message, AttemptDone):
                if request.candidates is not None or message.chunks != request.next_chunk:
                    self._stats.failed += 1
                    self._end(request, ErrorReply(ErrorCode.UNAVAILABLE, False))
                else:
                    self._stats.completed += 1
                    self._end(request, message.done)
            else:
                self._failed(ctx, node, request, message.error)
        self._pump(ctx, node.model)

    def _failed(self, ctx: Context, node: _Node, request: _Request, error: ErrorReply) -> None:
        if not request.streamed and error.code is ErrorCode.OVERLOADED:
            # The node was fuller than its last heartbeat said: not a failure
            # of the request; no placement there until the next heartbeat.
            node.saturated = True
            self._unplace(ctx, request, count=False)
        elif not request.streamed and error.retryable:
            self._unplace(ctx, request)
        else:
            self._stats.failed += 1
            self._end(request, error)

    def _gap(self, ctx: Context, node: _Node, request: _Request, attempt: bytes) -> None:
        node.running[attempt] = None
        self._cancel_on(node, attempt, ctx)
        self._stats.failed += 1
        self._end(request, ErrorReply(ErrorCode.UNAVAILABLE, False))

    def _end(self, request: _Request, reply: GenerateDone | ErrorReply | SealedRecord) -> None:
        submission = request.submission
        self._requests.pop(submission.id, None)
        self._directory.open.pop(submission.id, None)
        if request.timer is not None:
            request.timer.cancel()
        request.node = None
        request.attempt = None
        submission.push(reply)

    def _end_orphans(self) -> None:
        for submission in list(self._directory.open.values()):
            self._stats.failed += 1
            submission.push(ErrorReply(ErrorCode.UNAVAILABLE, not submission.streamed))
        self._directory.open.clear()
        self._requests.clear()
        self._queues.clear()

    @staticmethod
    def _cancel_on(node: _Node, attempt: bytes, ctx: Context) -> None:
        with contextlib.suppress(ActorError):
            node.worker.tell(CancelAttempt(attempt), sender=ctx.self)

    # ---------------------------------------------------------- membership

    def _join(self, ctx: Context, sender: ActorRef, join: JoinScheduler) -> None:
        current = self._nodes.get(sender.node)
        if current is not None and current.session == join.session:
            self._accept(ctx, sender, join.session)  # a repeated join: answer again
            return
        if current is not None:
            # A new session of a node we knew: whatever the old one ran is lost.
            self._drop_node(ctx, current)
            self._pump(ctx, current.model)
        if len(self._nodes) >= self._limits.max_nodes or (
            join.model not in self._known and len(self._known) >= self._limits.max_models
        ):
            return
        static = self._peer_keys(sender.node) if self._peer_keys is not None else None
        node = _Node(
            join,
            sender,
            ctx.monitor(sender),
            ctx.system.ref(sender.node, WORKER_NAME),
            ctx.clock.monotonic(),
            noise_key_binding(static) if static is not None else None,
        )
        self._nodes[node.name] = node
        self._known.add(join.model)
        self._stats.nodes_joined += 1
        self._publish()
        self._accept(ctx, sender, join.session)
        self._pump(ctx, node.model)

    def _accept(self, ctx: Context, membership: ActorRef, session: bytes) -> None:
        with contextlib.suppress(ActorError):
            membership.tell(JoinAccepted(session, self._limits.heartbeat_interval), sender=ctx.self)

    def _heartbeat(self, ctx: Context, sender: ActorRef, beat: Heartbeat) -> None:
        node = self._nodes.get(sender.node)
        if node is None or node.session != beat.session:
            with contextlib.suppress(ActorError):
                sender.tell(Rejoin(beat.session), sender=ctx.self)
            return
        now = ctx.clock.monotonic()
        node.last_seen = now
        node.saturated = beat.free_slots == 0
        reported = set(beat.running)
        # Placed two intervals ago and still unknown to the node: the
        # placement was lost on the way; abandoned attempts the node no
        # longer runs give their slot back.
        lost_before = now - 2 * self._limits.heartbeat_interval
        for attempt, request in list(node.running.items()):
            if attempt in reported:
                continue
            if request is None:
                del node.running[attempt]
            elif request.placed_at < lost_before:
                del node.running[attempt]
                self._unplace(ctx, request)
        self._pump(ctx, node.model)

    def _down(self, ctx: Context, down: Down) -> None:
        for node in list(self._nodes.values()):
            if node.monitor == down.monitor:
                self._drop_node(ctx, node)
                self._pump(ctx, node.model)
                return

    def _arm_sweep(self, ctx: Context) -> None:
        interval = self._limits.heartbeat_interval
        self._sweep_due = ctx.clock.monotonic() + interval
        ctx.send_after(interval, ctx.self, _Sweep())

    def _sweep(self, ctx: Context) -> None:
        """Drop silent nodes; end requests past their deadline and those
        whose reader left (their own ``_Expire`` or ``Abandon`` may have been
        dropped at a full mailbox); arm the next sweep."""
        now = ctx.clock.monotonic()
        if now < self._sweep_due:
            return  # a timer that arrived after an overdue sweep already ran
        self._arm_sweep(ctx)
        for submission, request in list(self._requests.items()):
            if request.deadline <= now:
                self._abandon(ctx, submission, expired=True)
            elif request.submission.reader_gone:
                self._abandon(ctx, submission, expired=False)
        interval = self._limits.heartbeat_interval
        silent_since = now - MISSED_HEARTBEATS * interval
        for node in list(self._nodes.values()):
            if node.last_seen < silent_since:
                self._drop_node(ctx, node)
                with contextlib.suppress(ActorError):
                    node.membership.tell(Rejoin(node.session), sender=ctx.self)
                self._pump(ctx, node.model)

    def _drop_node(self, ctx: Context, node: _Node) -> None:
        """Forget ``node`` now; each request it was running is placed again
        or ended (:meth:`_unplace`). Does not place anything itself."""
        if self._nodes.get(node.name) is not node:
            return
        del self._nodes[node.name]
        ctx.demonitor(node.monitor)
        self._stats.nodes_lost += 1
        running, node.running = node.running, {}
        for attempt, request in running.items():
            self._cancel_on(node, attempt, ctx)
            if request is not None:
                self._unplace(ctx, request)
        self._publish()

    def _list(self, ctx: Context, command: ListNodes) -> object:
        if command.model not in self._known:
            return UnknownModel()
        serving = sorted(
            (node for node in self._nodes.values() if node.model == command.model),
            key=lambda node: (-node.free, node.name),
        )
        return tuple(
            ServingNode(node.name, ctx.system.ref(node.name, ATTESTOR_NAME))
            for node in serving[:MAX_LISTED_NODES]
        )

    def _publish(self) -> None:
        serving: dict[str, int] = {}
        for node in self._nodes.values():
            serving[node.model] = serving.get(node.model, 0) + 1
        self._directory.publish(serving, self._known)


def check_tenant(tenant: str) -> None:
    """Raise :class:`ValueError` unless ``tenant`` is a tenant id the
    scheduler can queue under (the ingress's authenticated id, 1..128 chars)."""
    if not isinstance(tenant, str) or not 0 < len(tenant) <= MAX_TENANT_LEN:
        raise ValueError(f"a tenant id has 1 to {MAX_TENANT_LEN} characters")


__all__ = [
    "MAX_LISTED_NODES",
    "MISSED_HEARTBEATS",
    "SCHEDULER_NAME",
    "Abandon",
    "Admit",
    "ClusterDirectory",
    "ListNodes",
    "SchedulerActor",
    "SchedulerLimits",
    "SchedulerStats",
    "ServingNode",
    "check_tenant",
]
