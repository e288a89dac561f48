"""The ingress's view of the scheduler: :class:`SchedulerDispatcher` (the
:class:`~actors.scheduler.Dispatcher` over a :class:`SchedulerActor`) and the
submissions it hands out."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

from actors import ActorError, ActorRef, ActorSystem, AskTimeout, MailboxFull
from actors.inference import Reply
from actors.scheduler._actor import (
    SCHEDULER_NAME,
    Abandon,
    Admit,
    ClusterDirectory,
    SchedulerActor,
    SchedulerLimits,
    SchedulerStats,
    check_tenant,
)
from actors.scheduler._api import AdmissionError, ModelListing, NoCapacity, Overloaded
from protocol.inference import GenerateChunk, GenerateRequest
from protocol.messages import ErrorCode, ErrorReply

#: How long admission may take before the caller is told to come back.
DEFAULT_ADMISSION_TIMEOUT: Final = 2.0
#: How long past its deadline a submission waits for the scheduler's own
#: deadline error before it ends itself (the scheduler could be gone).
DEFAULT_END_GRACE: Final = 5.0
#: Mailbox of the scheduler actor: every chunk of every running request
#: passes through it, and a chunk arriving from a node at a full mailbox is
#: dropped (the request then ends with an explicit error, never a gap).
DEFAULT_SCHEDULER_MAILBOX: Final = 16384


class SchedulerSubmission:
    """One admitted request as its reader sees it (the
    :class:`~actors.scheduler.Submission` protocol).

    The scheduler actor pushes replies in; the reader iterates them. The
    iteration ends after the one terminal reply (``GenerateDone`` or
    ``ErrorReply``), after :meth:`aclose`, or, should the scheduler never
    answer, with ``ErrorReply(DEADLINE_EXCEEDED)`` a grace period after the
    deadline: every submission ends (I7) whatever happens to the actor.
    Replies wait in memory until read; a request holds at most
    ``max_tokens`` chunks and one terminal reply.
    """

    def __init__(
        self,
        dispatcher: SchedulerDispatcher,
        submission_id: int,
        deadline: float,
        grace: float,
    ) -> None:
        self.id = submission_id
        self._dispatcher = dispatcher
        self._clock = dispatcher.system.clock
        self._waiter = dispatcher.system.driver.new_waiter()
        self._give_up_at = deadline + grace
        self._replies: deque[Reply] = deque()
        self._ended = False  # the terminal reply was pushed
        self._finished = False  # the reader saw the end (or closed)
        self._chunks = 0

    @property
    def streamed(self) -> bool:
        """Whether any chunk reached this submission."""
        return self._chunks > 0

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def reader_gone(self) -> bool:
        """Whether the reader saw the end or closed the submission (the
        scheduler's sweep abandons a request whose ``Abandon`` was lost)."""
        return self._finished

    def push(self, reply: Reply) -> None:
        """Called by the scheduler actor. Nothing is taken after the terminal
        reply, so a submission ends exactly once."""
        if self._ended:
            return
        if isinstance(reply, GenerateChunk):
            self._chunks += 1
        else:
            self._ended = True
        if not self._finished:
            self._replies.append(reply)
            self._waiter.wake()

    def __aiter__(self) -> SchedulerSubmission:
        return self

    async def __anext__(self) -> Reply:
        while True:
            if self._replies:
                reply = self._replies.popleft()
                if not isinstance(reply, GenerateChunk):
                    self._finished = True
                return reply
            if self._finished or (self._ended and not self._replies):
                self._finished = True
                raise StopAsyncIteration
            remaining = self._give_up_at - self._clock.monotonic()
            if remaining <= 0:
                # The scheduler's deadline error never came: end here, and
                # tell the scheduler to forget the request.
                self.push(ErrorReply(ErrorCode.DEADLINE_EXCEEDED, False))
                self._dispatcher._abandon(self.id)
                continue
            await self._waiter.wait(remaining)

    async def aclose(self) -> None:
        """The reader went away: the request is cancelled (taken off its
        queue, or stopped on its node within one token). Idempotent."""
        if self._finished:
            return
        self._finished = True
        self._replies.clear()
        if not self._ended:
            self._dispatcher._abandon(self.id)


class SchedulerDispatcher:
    """The :class:`~actors.scheduler.Dispatcher` of an ingress node: admission
    through the scheduler actor registered as ``name`` in ``system``.

    ``known_models`` are the models the cluster serves (from the release);
    a model an inference node joined with is known from then on. Wiring::

        dispatcher = SchedulerDispatcher(system, known_models=models)
        supervisor_spec = ChildSpec("scheduler", dispatcher.actor, name="scheduler",
                                    mailbox=DEFAULT_SCHEDULER_MAILBOX)
        # or, unsupervised: dispatcher.spawn()
    """

    def __init__(
        self,
        system: ActorSystem,
        *,
        limits: SchedulerLimits | None = None,
        known_models: Iterable[str] = (),
        name: str = SCHEDULER_NAME,
        admission_timeout: float = DEFAULT_ADMISSION_TIMEOUT,
        end_grace: float = DEFAULT_END_GRACE,
    ) -> None:
        if not (admission_timeout > 0 and end_grace > 0):
            raise ValueError("the admission timeout and the end grace must be positive")
        self.system = system
        self.limits = limits if limits is not None else SchedulerLimits()
        self.directory = ClusterDirectory(known_models)
        self.name = name
        self._ref = system.ref(system.node, name)
        self._admission_timeout = admission_timeout
        self._end_grace = end_grace
        self._ids = itertools.count(1)

    @property
    def stats(self) -> SchedulerStats:
        return self.directory.stats

    def actor(self) -> SchedulerActor:
        """A fresh scheduler actor sharing this dispatcher's directory (the
        ``start`` of its supervisor's :class:`~actors.ChildSpec`)."""
        return SchedulerActor(self.directory, self.limits)

    def spawn(self, *, mailbox: int = DEFAULT_SCHEDULER_MAILBOX) -> ActorRef:
        """Spawn the scheduler actor unsupervised (tests, simple wiring)."""
        return self.system.spawn(self.actor(), name=self.name, mailbox=mailbox)

    def models(self) -> Sequence[ModelListing]:
        return self.directory.listings

    async def submit(
        self, request: GenerateRequest, *, tenant: str, deadline: float
    ) -> SchedulerSubmission:
        """Admit ``request`` for ``tenant`` until ``deadline`` (absolute, on
        the Clock seam) or raise :class:`UnknownModel`, :class:`Overloaded`
        or :class:`NoCapacity`. It never waits longer than the admission
        timeout: a scheduler too busy to answer is :class:`Overloaded`, one
        that is not running is :class:`NoCapacity`. ``tenant`` is the
        ingress's authenticated tenant id (1..128 characters; anything else
        is a :class:`ValueError`, a caller's bug)."""
        check_tenant(tenant)
        if not isinstance(deadline, int | float) or not math.isfinite(deadline):
            raise ValueError("the deadline is a finite time on the Clock seam")
        submission = SchedulerSubmission(self, next(self._ids), float(deadline), self._end_grace)
        refusal: AdmissionError | None = None
        try:
            answer = await self._ref.ask(
                Admit(request, tenant, float(deadline), submission), self._admission_timeout
            )
        except (AskTimeout, MailboxFull):
            refusal = Overloaded(self.limits.retry_after)
        except ActorError:
            refusal = NoCapacity()
        else:
            if isinstance(answer, AdmissionError):
                refusal = answer
        if refusal is not None:
            # An admission that answered late is withdrawn; one refused was
            # never queued. Raised here, outside the handlers, with no context.
            self._abandon(submission.id)
            raise refusal
        return submission

    def _abandon(self, submission: int) -> None:
        # Full or gone: the scheduler's deadline timer ends it instead.
        with contextlib.suppress(ActorError):
            self._ref.tell(Abandon(submission))


__all__ = [
    "DEFAULT_ADMISSION_TIMEOUT",
    "DEFAULT_END_GRACE",
    "DEFAULT_SCHEDULER_MAILBOX",
    "SchedulerDispatcher",
    "SchedulerSubmission",
]
