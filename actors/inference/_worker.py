"""The inference node's side of scheduling: :class:`InferenceWorker` runs the
scheduler's placements, :class:`SchedulerMembership` keeps the node joined."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from typing import Final

from actors import Actor, ActorError, ActorRef, Context, Down, Exit, ExitReason
from actors.inference._actor import Generate, InferenceActor, Reply
from actors.inference._sealed import (
    OpenedRequest,
    SealedServing,
    SeenRequests,
    open_sealed,
    seal_reply,
)
from actors.seams.engine import CancelToken
from protocol.e2e import E2EError
from protocol.inference import GenerateChunk, GenerateDone
from protocol.messages import ErrorCode, ErrorReply
from protocol.scheduling import (
    ID_SIZE,
    MAX_SLOTS,
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

#: The registered name of the worker (the scheduler places work there).
WORKER_NAME: Final = "inference"
#: How many finished attempt ids a worker remembers, so that a placement
#: frame the network delivered twice does not run twice.
_REMEMBERED_ATTEMPTS: Final = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerStatus:
    """Local ask to the worker; answered with :class:`WorkerLoad`."""


@dataclasses.dataclass(frozen=True, slots=True)
class DrainWorker:
    """Local ask to the worker when its node drains: it takes no new
    placement from then on (each is refused ``OVERLOADED``, which the
    scheduler places elsewhere without counting an attempt) and reports no
    free slot, while what it runs finishes. Answered with :class:`WorkerLoad`."""


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerLoad:
    free_slots: int
    running: tuple[bytes, ...]


class _Attempt:
    """One placement this worker runs: where its replies go, its cancel
    token, and whether its terminal reply was sent."""

    __slots__ = ("chunks", "ended", "id", "reply_to", "task", "token")

    def __init__(self, attempt: bytes, reply_to: ActorRef) -> None:
        self.id = attempt
        self.reply_to = reply_to
        self.token = CancelToken()
        self.ended = False
        self.chunks = 0
        self.task: ActorRef | None = None

    def fail(self, sender: ActorRef, code: ErrorCode, retryable: bool) -> None:
        """End the attempt with an explicit error, once; the generation, if
        it still runs, is cancelled and its remaining replies dropped."""
        self.token.cancel()
        if self.ended:
            return
        self.ended = True
        with contextlib.suppress(ActorError):
            self.reply_to.tell(AttemptFailed(self.id, ErrorReply(code, retryable)), sender=sender)


class _Generation(Actor):
    """Runs one attempt through :meth:`InferenceActor.generate` (one actor
    per attempt, so a worker with several slots generates concurrently).

    A sealed attempt is opened here first, with the node's static key; its
    chunks and its end go back sealed (``sched.record``), the last record
    with the usage and a receipt signed by the node's receipt key."""

    def __init__(
        self,
        inference: InferenceActor,
        attempt: _Attempt,
        place: PlaceAttempt | PlaceSealed,
        sealed: SealedServing | None = None,
    ) -> None:
        self._inference = inference
        self._attempt = attempt
        self._place = place
        self._sealed = sealed

    async def started(self, ctx: Context) -> None:
        attempt = self._attempt
        gone = False
        place = self._place
        opened: OpenedRequest | None = None
        if isinstance(place, PlaceSealed):
            serving = self._sealed
            result = (
                open_sealed(place.request, serving, random=ctx.random)
                if serving is not None
                else ErrorReply(ErrorCode.UNAVAILABLE, True)
            )
            if isinstance(result, ErrorReply):
                # Not for this node, or not opening: ended with a code only.
                attempt.ended = True
                with contextlib.suppress(ActorError):
                    attempt.reply_to.tell(AttemptFailed(attempt.id, result), sender=ctx.self)
                ctx.stop()
                return
            opened = result
            request = opened.request
        else:
            request = place.request

        def sealed_record(message: GenerateChunk | GenerateDone) -> AttemptRecord | None:
            assert opened is not None and isinstance(place, PlaceSealed)
            assert self._sealed is not None
            record: bytes | None = None
            with contextlib.suppress(E2EError):
                record = seal_reply(message, opened, place.request, self._sealed)
            if record is None:
                return None
            wrapped = AttemptRecord(attempt.id, attempt.chunks, record)
            attempt.chunks += 1
            attempt.ended = wrapped.final
            return wrapped

        async def reply(message: Reply) -> None:
            nonlocal gone
            if attempt.ended:
                return  # already ended by the worker: the rest is dropped
            wrapped: AttemptChunk | AttemptDone | AttemptFailed | AttemptRecord | None
            if opened is not None and not isinstance(message, ErrorReply):
                wrapped = sealed_record(message)
                if wrapped is None:
                    # The answer cannot be sealed within the format's limits.
                    wrapped = AttemptFailed(attempt.id, ErrorReply(ErrorCode.INTERNAL, False))
                    attempt.ended = True
                    attempt.token.cancel()
            elif isinstance(message, GenerateChunk):
                wrapped = AttemptChunk(attempt.id, attempt.chunks, message)
                attempt.chunks += 1
            elif isinstance(message, GenerateDone):
                wrapped = AttemptDone(attempt.id, attempt.chunks, message)
                attempt.ended = True
            else:
                wrapped = AttemptFailed(attempt.id, message)
                attempt.ended = True
            try:
                attempt.reply_to.tell(wrapped, sender=ctx.self)
            except ActorError:
                # The requester cannot be answered (its link is gone): the
                # generation stops at the next token.
                gone = True
                attempt.ended = True
                raise

        failure: Exception | None = None
        try:
            await self._inference.generate(Generate(request, reply, attempt.token))
        except Exception as error:
            failure = None if gone else error
        if failure is not None:
            # An engine failure, already answered INTERNAL: reported by the
            # runtime by type and location only.
            raise failure
        ctx.stop()


class InferenceWorker(Actor):
    """The worker of an inference node (registered as ``"inference"``).

    Takes ``sched.place`` from the scheduler over the node link and runs each
    attempt in its own linked actor through ``inference``'s
    :meth:`~InferenceActor.generate`, at most ``slots`` at once; the replies
    go back to the placing scheduler as ``sched.chunk`` / ``sched.done`` /
    ``sched.error`` naming the attempt. A placement beyond the slots is
    refused at once with ``OVERLOADED`` (retryable). ``sched.cancel`` from
    the placing node sets the attempt's cancel token, so generation stops
    within one token. The worker monitors each requester: one that ends (a
    scheduler that restarted, a lost link) has its attempts cancelled. An
    attempt whose actor died without its terminal reply is answered
    ``INTERNAL`` here; when the worker stops, every attempt it runs is
    answered ``UNAVAILABLE`` (retryable) and cancelled.
    """

    trap_exit = True

    def __init__(
        self, inference: InferenceActor, *, slots: int, sealed: SealedServing | None = None
    ) -> None:
        if not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"a worker has 1 to {MAX_SLOTS} slots")
        self._inference = inference
        self._slots = slots
        #: The node's keys for sealed requests (``None``: it refuses them,
        #: ``UNAVAILABLE``, so the scheduler tries another candidate).
        self._sealed = sealed
        self._seen_requests = SeenRequests()
        #: Placements that reached this worker (plain and sealed), a count only.
        self.placements_received = 0
        self._running: dict[bytes, _Attempt] = {}
        self._by_task: dict[ActorRef, _Attempt] = {}
        # requester -> (monitor, attempts running for it): a requester that
        # ends (a restarted scheduler) has its attempts cancelled at once.
        self._requesters: dict[ActorRef, tuple[int, int]] = {}
        self._finished: deque[bytes] = deque()
        self._finished_set: set[bytes] = set()
        self._draining = False

    @property
    def slots(self) -> int:
        return self._slots

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, DrainWorker):
            self._draining = True
        if isinstance(message, WorkerStatus | DrainWorker):
            free = 0 if self._draining else self._slots - len(self._running)
            return WorkerLoad(free, tuple(self._running))
        if isinstance(message, Exit):
            self._exited(ctx, message)
            return None
        if isinstance(message, Down):
            self._requester_down(message)
            return None
        sender = ctx.sender
        if sender is None:
            return None
        if isinstance(message, PlaceAttempt | PlaceSealed):
            self._place(ctx, sender, message)
        elif isinstance(message, CancelAttempt):
            attempt = self._running.get(message.attempt)
            if attempt is not None and attempt.reply_to.node == sender.node:
                attempt.token.cancel()
        return None

    async def stopping(self, ctx: Context, reason: ExitReason) -> None:
        for attempt in list(self._running.values()):
            attempt.fail(ctx.self, ErrorCode.UNAVAILABLE, True)

    def _place(self, ctx: Context, sender: ActorRef, place: PlaceAttempt | PlaceSealed) -> None:
        self.placements_received += 1
        if place.attempt in self._running or place.attempt in self._finished_set:
            return  # the same placement delivered twice
        refusal: ErrorReply | None = None
        if self._draining or len(self._running) >= self._slots:
            refusal = ErrorReply(ErrorCode.OVERLOADED, True)
        elif isinstance(place, PlaceSealed) and not self._seen_requests.first_sight(
            place.request.request_id
        ):
            # A request id this node already served: answering it again would
            # seal a second answer under the same request key. Never.
            refusal = ErrorReply(ErrorCode.BAD_REQUEST, False)
        if refusal is not None:
            with contextlib.suppress(ActorError):
                sender.tell(AttemptFailed(place.attempt, refusal), sender=ctx.self)
            return
        attempt = _Attempt(place.attempt, sender)
        monitor, count = self._requesters.get(sender, (0, 0))
        if not count:
            monitor = ctx.monitor(sender)
        self._requesters[sender] = (monitor, count + 1)
        self._running[attempt.id] = attempt
        attempt.task = ctx.spawn_link(_Generation(self._inference, attempt, place, self._sealed))
        self._by_task[attempt.task] = attempt

    def _exited(self, ctx: Context, exit: Exit) -> None:
        if exit.ref == ctx.parent:
            # Our supervisor ended: stop in order (stopping answers the rest).
            ctx.stop(exit.reason)
            return
        attempt = self._by_task.pop(exit.ref, None)
        if attempt is None:
            return
        del self._running[attempt.id]
        self._remember(attempt.id)
        attempt.fail(ctx.self, ErrorCode.INTERNAL, True)
        held = self._requesters.get(attempt.reply_to)
        if held is not None:
            monitor, count = held
            if count > 1:
                self._requesters[attempt.reply_to] = (monitor, count - 1)
            else:
                del self._requesters[attempt.reply_to]
                ctx.demonitor(monitor)

    def _requester_down(self, down: Down) -> None:
        for requester, (monitor, _count) in list(self._requesters.items()):
            if monitor != down.monitor:
                continue
            del self._requesters[requester]
            for attempt in self._running.values():
                if attempt.reply_to == requester:
                    # Nobody is left to answer: stop within one token, send nothing.
                    attempt.ended = True
                    attempt.token.cancel()

    def _remember(self, attempt: bytes) -> None:
        self._finished.append(attempt)
        self._finished_set.add(attempt)
        if len(self._finished) > _REMEMBERED_ATTEMPTS:
            self._finished_set.discard(self._finished.popleft())


# ------------------------------------------------------------- membership


@dataclasses.dataclass(frozen=True, slots=True)
class _JoinTick:
    epoch: int


@dataclasses.dataclass(frozen=True, slots=True)
class _HeartbeatTick:
    epoch: int


class SchedulerMembership(Actor):
    """Keeps this inference node joined to the scheduler ``scheduler``
    (``system.ref(ingress_node, "scheduler")``) for ``model`` with ``slots``.

    It joins under a fresh random session, then heartbeats the worker's load
    at the interval the scheduler asked for. The runtime shows a lost link
    only as ``Down(noconnection)`` on monitors (a link whose attestation
    lapsed or failed is closed by the transport, which is the same loss), so
    the membership monitors the scheduler it joined and the local worker:

    * the scheduler's ``Down`` (link lost, scheduler restarted) -> join again
      under a new session, retrying every ``rejoin_interval`` until the link
      is back (a tell over a lost link fails at once);
    * the worker's ``Down`` -> ``sched.leave`` (the scheduler retries or ends
      what it ran), then join again once a worker is registered;
    * ``sched.rejoin`` (the scheduler dropped this session) -> join again.
    """

    def __init__(
        self,
        scheduler: ActorRef,
        *,
        model: str,
        slots: int,
        worker: str = WORKER_NAME,
        rejoin_interval: float = 1.0,
        status_timeout: float = 1.0,
    ) -> None:
        JoinScheduler(bytes(ID_SIZE), model, slots)  # the same checks as the wire's
        if not (rejoin_interval > 0 and status_timeout > 0):
            raise ValueError("intervals must be positive")
        self._scheduler = scheduler
        self._model = model
        self._slots = slots
        self._worker_name = worker
        self._rejoin_interval = rejoin_interval
        self._status_timeout = status_timeout
        self._epoch = 0
        self._session = bytes(ID_SIZE)
        self._joined = False
        self._interval = rejoin_interval
        self._scheduler_monitor: int | None = None
        self._worker: ActorRef | None = None
        self._worker_monitor: int | None = None
        self.joins = 0

    @property
    def joined(self) -> bool:
        return self._joined

    async def started(self, ctx: Context) -> None:
        self._begin_joining(ctx)

    async def stopping(self, ctx: Context, reason: ExitReason) -> None:
        # A draining node leaves at once rather than after three silent
        # heartbeat intervals, so the scheduler places nothing new here.
        if self._joined:
            with contextlib.suppress(ActorError):
                self._scheduler.tell(LeaveScheduler(self._session), sender=ctx.self)

    async def receive(self, ctx: Context, message: object) -> object:
        sender = ctx.sender
        if isinstance(message, _JoinTick):
            if message.epoch == self._epoch and not self._joined:
                self._try_join(ctx)
        elif isinstance(message, _HeartbeatTick):
            if message.epoch == self._epoch and self._joined:
                await self._beat(ctx)
        elif isinstance(message, Down):
            self._down(ctx, message)
        elif sender is None or sender.node != self._scheduler.node:
            return None
        elif isinstance(message, JoinAccepted):
            if message.session == self._session and not self._joined:
                self._joined = True
                self.joins += 1
                self._epoch += 1
                self._interval = message.heartbeat_interval
                self._scheduler_monitor = ctx.monitor(sender)
                ctx.send_after(self._interval, ctx.self, _HeartbeatTick(self._epoch))
        elif isinstance(message, Rejoin) and message.session == self._session:
            self._begin_joining(ctx)
        return None

    def _begin_joining(self, ctx: Context) -> None:
        if self._scheduler_monitor is not None:
            ctx.demonitor(self._scheduler_monitor)
            self._scheduler_monitor = None
        self._joined = False
        self._epoch += 1
        self._session = ctx.random.token_bytes(ID_SIZE)
        self._try_join(ctx)

    def _try_join(self, ctx: Context) -> None:
        if self._worker is None:
            worker = ctx.system.whereis(self._worker_name)
            if worker is not None:
                self._worker = worker
                self._worker_monitor = ctx.monitor(worker)
        if self._worker is not None:
            with contextlib.suppress(ActorError):
                self._scheduler.tell(
                    JoinScheduler(self._session, self._model, self._slots), sender=ctx.self
                )
        ctx.send_after(self._rejoin_interval, ctx.self, _JoinTick(self._epoch))

    async def _beat(self, ctx: Context) -> None:
        epoch = self._epoch
        worker = self._worker
        load: object = None
        if worker is not None:
            with contextlib.suppress(ActorError):
                load = await worker.ask(WorkerStatus(), self._status_timeout)
        if epoch != self._epoch:
            return
        if isinstance(load, WorkerLoad):
            with contextlib.suppress(ActorError):
                self._scheduler.tell(
                    Heartbeat(self._session, max(0, load.free_slots), load.running),
                    sender=ctx.self,
                )
        ctx.send_after(self._interval, ctx.self, _HeartbeatTick(epoch))

    def _down(self, ctx: Context, down: Down) -> None:
        if down.monitor == self._scheduler_monitor:
            self._scheduler_monitor = None
            self._begin_joining(ctx)
        elif down.monitor == self._worker_monitor:
            self._worker_monitor = None
            self._worker = None
            with contextlib.suppress(ActorError):
                self._scheduler.tell(LeaveScheduler(self._session), sender=ctx.self)
            self._begin_joining(ctx)


__all__ = [
    "WORKER_NAME",
    "DrainWorker",
    "InferenceWorker",
    "SchedulerMembership",
    "WorkerLoad",
    "WorkerStatus",
]
