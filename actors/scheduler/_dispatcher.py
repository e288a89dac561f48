"""The ingress's view of the scheduler: :class:`SchedulerDispatcher` (the
:class:`~actors.scheduler.Dispatcher` over a :class:`SchedulerActor`) and the
submissions it hands out."""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

from actors import ActorError, ActorRef, ActorSystem, AskTimeout, MailboxFull
from actors.scheduler._actor import (
    SCHEDULER_NAME,
    Abandon,
    Admit,
    ClusterDirectory,
    ListNodes,
    SchedulerActor,
    SchedulerLimits,
    SchedulerStats,
    ServingNode,
    check_tenant,
)
from actors.scheduler._api import (
    AdmissionError,
    ModelListing,
    NoCapacity,
    NodeDocument,
    Overloaded,
    PeerKeys,
    SealedRecord,
    SubmissionReply,
)
from protocol.e2e import SealedRequest
from protocol.inference import GenerateChunk, GenerateRequest
from protocol.messages import ErrorCode, ErrorReply
from protocol.scheduling import AttestNode, NodeAttestation

#: How long admission may take before the caller is told to come back.
DEFAULT_ADMISSION_TIMEOUT: Final = 2.0
#: How long past its deadline a submission waits for the scheduler's own
#: deadline error before it ends itself (the scheduler could be gone).
DEFAULT_END_GRACE: Final = 5.0
#: Mailbox of the scheduler actor: every chunk of every running request
#: passes through it, and a chunk arriving from a node at a full mailbox is
#: dropped (the request then ends with an explicit error, never a gap).
DEFAULT_SCHEDULER_MAILBOX: Final = 16384
#: How long one node may take to answer ``sched.attest`` (a TPM command on
#: its client path); a node slower than this is left out of the listing.
DEFAULT_ATTEST_TIMEOUT: Final = 5.0


def _is_chunk(reply: SubmissionReply) -> bool:
    """Whether ``reply`` is a piece of the answer rather than its end."""
    return isinstance(reply, GenerateChunk) or (isinstance(reply, SealedRecord) and not reply.final)


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
        self._replies: deque[SubmissionReply] = deque()
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

    def push(self, reply: SubmissionReply) -> None:
        """Called by the scheduler actor. Nothing is taken after the terminal
        reply, so a submission ends exactly once."""
        if self._ended:
            return
        if _is_chunk(reply):
            self._chunks += 1
        else:
            self._ended = True
        if not self._finished:
            self._replies.append(reply)
            self._waiter.wake()

    def __aiter__(self) -> SchedulerSubmission:
        return self

    async def __anext__(self) -> SubmissionReply:
        while True:
            if self._replies:
                reply = self._replies.popleft()
                if not _is_chunk(reply):
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
        peer_keys: PeerKeys | None = None,
        attest_timeout: float = DEFAULT_ATTEST_TIMEOUT,
    ) -> None:
        if not (admission_timeout > 0 and end_grace > 0 and attest_timeout > 0):
            raise ValueError("the admission and attest timeouts and the end grace are positive")
        #: The link keys of joined nodes (the transport's ``peer_static``):
        #: without them no sealed request is placed anywhere (NoCapacity).
        self.peer_keys = peer_keys
        self._attest_timeout = attest_timeout
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
        return SchedulerActor(self.directory, self.limits, self.peer_keys)

    def spawn(self, *, mailbox: int = DEFAULT_SCHEDULER_MAILBOX) -> ActorRef:
        """Spawn the scheduler actor unsupervised (tests, simple wiring)."""
        return self.system.spawn(self.actor(), name=self.name, mailbox=mailbox)

    def models(self) -> Sequence[ModelListing]:
        return self.directory.listings

    async def submit(
        self, request: GenerateRequest | SealedRequest, *, tenant: str, deadline: float
    ) -> SchedulerSubmission:
        """Admit ``request`` for ``tenant`` until ``deadline`` (absolute, on
        the Clock seam) or raise :class:`UnknownModel`, :class:`Overloaded`
        or :class:`NoCapacity`. It never waits longer than the admission
        timeout: a scheduler too busy to answer is :class:`Overloaded`, one
        that is not running is :class:`NoCapacity`. ``tenant`` is the
        ingress's authenticated tenant id (1..128 characters; anything else
        is a :class:`ValueError`, a caller's bug).

        A :class:`~protocol.e2e.SealedRequest` is placed only on a node whose
        link key's binding one of its envelopes names (:class:`NoCapacity`
        if none serves the model now, :class:`Replayed` for an id admitted
        before); its submission yields the node's :class:`SealedRecord`
        items as they come."""
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

    async def node_documents(self, model: str, nonce: bytes) -> list[NodeDocument]:
        """Fresh documents over ``nonce`` from the nodes serving ``model``
        (at most :data:`~actors.scheduler.MAX_LISTED_NODES`), each asked over
        its attested link with ``sched.attest`` at once and given the attest
        timeout; a node that fails or is late is left out. Raises
        :class:`UnknownModel`, or :class:`Overloaded` if the scheduler is too
        busy to list them. ``nonce`` is 32 to 64 bytes (else ValueError)."""
        question = AttestNode(nonce)
        listed: object = None
        refusal: AdmissionError | None = None
        try:
            listed = await self._ref.ask(ListNodes(model), self._admission_timeout)
        except (AskTimeout, MailboxFull):
            refusal = Overloaded(self.limits.retry_after)
        except ActorError:
            refusal = NoCapacity()
        if isinstance(listed, AdmissionError):
            refusal = listed
        if refusal is not None:
            raise refusal
        assert isinstance(listed, tuple)
        found: dict[str, NodeDocument] = {}
        driver = self.system.driver
        all_in = driver.new_waiter()
        waiting = [len(listed)]

        async def ask(node: ServingNode) -> None:
            try:
                with contextlib.suppress(ActorError):
                    answer = await node.attestor.ask(question, self._attest_timeout)
                    if isinstance(answer, NodeAttestation):
                        found[node.name] = NodeDocument(node.name, answer.kind, answer.document)
            finally:
                waiting[0] -= 1
                if not waiting[0]:
                    all_in.wake()

        # One task per node (the driver's, so the simulator runs this too):
        # every node gets the whole timeout, and the slowest bounds the wait.
        tasks = [driver.start(functools.partial(ask, node)) for node in listed]
        try:
            if waiting[0]:
                await all_in.wait(self._attest_timeout + 1.0)
        finally:
            for task in tasks:
                task.kill()
        return [found[node.name] for node in listed if node.name in found]

    def _abandon(self, submission: int) -> None:
        # Full or gone: the scheduler's deadline timer ends it instead.
        with contextlib.suppress(ActorError):
            self._ref.tell(Abandon(submission))


__all__ = [
    "DEFAULT_ADMISSION_TIMEOUT",
    "DEFAULT_ATTEST_TIMEOUT",
    "DEFAULT_END_GRACE",
    "DEFAULT_SCHEDULER_MAILBOX",
    "SchedulerDispatcher",
    "SchedulerSubmission",
]
