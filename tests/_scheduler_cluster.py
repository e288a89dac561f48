"""A simulated cluster for the scheduler: one ingress node running the real
scheduler behind a :class:`SchedulerDispatcher`, and inference nodes running
the real worker, membership and inference actors on the scripted engine,
all over the simulated network in virtual time."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from actors import ActorRef, ActorSystem, ChildSpec, CrashReport, Supervisor
from actors.attestation import Evidence
from actors.inference import (
    ATTESTOR_NAME,
    InferenceActor,
    InferenceWorker,
    NodeAttestor,
    Reply,
    SchedulerMembership,
    SealedServing,
    WorkerLoad,
    WorkerStatus,
)
from actors.key_custody import NodeKeyCustody
from actors.remote import RemoteLayer
from actors.scheduler import (
    DEFAULT_SCHEDULER_MAILBOX,
    SchedulerDispatcher,
    SchedulerLimits,
    SchedulerSubmission,
)
from actors.seams.clock import Clock
from actors.seams.engine import CancelToken, Chunk, GenerationParams
from protocol.attestation import DocumentKind
from protocol.customer_data import CustomerData
from protocol.e2e import RequestBody, RequestKey, SealedRequest, seal_request
from protocol.inference import ChatTurn, GenerateChunk, GenerateRequest, Role
from simulations.checkers import CheckResult, every_submission_ends
from simulations.clock import ManualClock
from simulations.engine import ScriptedEngine
from simulations.kernel import Kernel, SimDriver
from simulations.network import Fixed, LinkProfile, SimNetwork
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM
from simulations.random import RecordedRandom
from simulations.trace import TraceRecorder

MODEL = "scripted-model"
CANARY = "CANARY-sched-71c2 Where do the rivers go?"
INGRESS = "ingress"
#: What the release names as the model's digest, and its version, in receipts.
MODEL_SHA384 = bytes(range(48))
RELEASE_VERSION = 3

_T = TypeVar("_T")


def request(max_tokens: int = 4, seed: int = 7) -> GenerateRequest:
    return GenerateRequest(
        MODEL, (ChatTurn(Role.USER, CustomerData(CANARY)),), max_tokens, 0.0, 1.0, seed
    )


def prompt_tokens(req: GenerateRequest) -> int:
    """What the scripted engine reports as ``req``'s prompt tokens."""
    return ScriptedEngine(MODEL).count_prompt_tokens(req.turns)


def expected_text(req: GenerateRequest) -> str:
    params = GenerationParams(req.max_tokens, req.temperature, req.top_p, req.seed)
    chunks = ScriptedEngine(MODEL).generate(req.turns, params, CancelToken())
    return "".join(chunk.text.reveal_text() for chunk in chunks)


def text_of(stream: Sequence[Reply]) -> str:
    return "".join(r.text.reveal_text() for r in stream if isinstance(r, GenerateChunk))


class Paced:
    """The run-blocking seam of a node whose engine takes ``step`` seconds of
    virtual time per blocking step (a real node runs them in a thread)."""

    def __init__(self, clock: Clock, step: float) -> None:
        self._clock = clock
        self.step = step

    async def __call__(self, function: Callable[[], _T], /) -> _T:
        await self._clock.sleep(self.step)
        return function()


class CountingEngine(ScriptedEngine):
    """The scripted engine, counting what it served and produced."""

    def __init__(self) -> None:
        super().__init__(MODEL)
        self.served = 0
        self.produced = 0

    def generate(
        self, messages: Sequence[ChatTurn], params: GenerationParams, cancel: CancelToken
    ) -> Iterator[Chunk]:
        self.served += 1
        for chunk in super().generate(messages, params, cancel):
            self.produced += 1
            yield chunk


def seal(
    cluster: Cluster, req: GenerateRequest, candidates: Sequence[str]
) -> tuple[SealedRequest, RequestKey]:
    """``req`` sealed for the named nodes' static keys, as a client sealing
    to the nodes it verified does."""
    return seal_request(
        RequestBody.of(req),
        model=req.model,
        max_tokens=req.max_tokens,
        candidates=[cluster.nodes[name].custody.static_public for name in candidates],
        entropy=cluster.rng.token_bytes,
    )


class InferenceNode:
    def __init__(
        self,
        cluster: Cluster,
        name: str,
        slots: int,
        step: float,
        announced: int | None = None,
        engine: CountingEngine | None = None,
    ) -> None:
        self.name = name
        self.system = ActorSystem(
            name, SimDriver(cluster.kernel), random=cluster.rng, on_crash=cluster.crashes.append
        )
        RemoteLayer(self.system, cluster.network.endpoint(name))
        self.engine = engine if engine is not None else CountingEngine()
        self.pace = Paced(self.system.clock, step)
        self.slots = slots
        self.inference = InferenceActor(self.engine, self.pace)
        self.announced = announced if announced is not None else slots
        # The node's keys, born in memory as measured boot makes them; the
        # link key the scheduler learns for this node is its static key.
        self.custody = NodeKeyCustody(random=cluster.rng, receipt_key=True)
        cluster.link_keys[name] = self.custody.static_public
        self.tpm = SimulatedNitroTPM(seed=name, pki=cluster.pki, clock=cluster.wall)
        self.sealed = SealedServing(self.custody, MODEL_SHA384, RELEASE_VERSION)
        self.attestor = self.system.spawn(NodeAttestor(self.attest), name=ATTESTOR_NAME)
        self.worker = self.start_worker()
        self.membership = self.start_membership()

    async def attest(self, nonce: bytes) -> Evidence:
        return Evidence(DocumentKind.NITRO, self.custody.attest(self.tpm, nonce=nonce))

    def start_membership(self) -> ActorRef:
        self.membership = self.system.spawn(
            SchedulerMembership(
                self.system.ref(INGRESS, "scheduler"),
                model=MODEL,
                slots=self.announced,
                rejoin_interval=0.2,
            )
        )
        return self.membership

    def start_worker(self) -> ActorRef:
        self.worker_actor = InferenceWorker(self.inference, slots=self.slots, sealed=self.sealed)
        self.worker = self.system.spawn(self.worker_actor, name="inference")
        return self.worker

    async def load(self) -> WorkerLoad:
        load = await self.system.ref(self.name, "inference").ask(WorkerStatus(), 1.0)
        assert isinstance(load, WorkerLoad)
        return load


class Cluster:
    def __init__(
        self,
        nodes: Sequence[str] = ("inf-1", "inf-2"),
        *,
        slots: int = 1,
        step: float | dict[str, float] = 0.01,
        limits: SchedulerLimits | None = None,
        seed: int = 1,
        profile: LinkProfile | None = None,
        announced: int | None = None,
        supervised: bool = False,
        engines: dict[str, CountingEngine] | None = None,
        mailbox: int = DEFAULT_SCHEDULER_MAILBOX,
    ) -> None:
        self.kernel = Kernel()
        self.trace = TraceRecorder(lambda: self.kernel.now)
        self.rng = RecordedRandom(seed, self.trace)
        self.network = SimNetwork(
            self.kernel,
            self.rng,
            self.trace,
            default=profile if profile is not None else LinkProfile(latency=Fixed(0.002)),
            detect_after=0.2,
        )
        self.crashes: list[CrashReport] = []
        self.pki = SimulatedNitroPKI("scheduler-cluster")
        self.wall = ManualClock(1_760_000_000_000)
        #: The static key of each node's link as the transport authenticated
        #: it (a test may swap one, as a node coming back with another key).
        self.link_keys: dict[str, bytes] = {}
        self.ingress = ActorSystem(
            INGRESS, SimDriver(self.kernel), random=self.rng, on_crash=self.crashes.append
        )
        RemoteLayer(self.ingress, self.network.endpoint(INGRESS))
        self.dispatcher = SchedulerDispatcher(
            self.ingress,
            limits=limits if limits is not None else SchedulerLimits(heartbeat_interval=0.5),
            known_models=[MODEL],
            peer_keys=self.link_keys.get,
        )
        if supervised:
            spec = ChildSpec(
                "scheduler",
                self.dispatcher.actor,
                name="scheduler",
                mailbox=mailbox,
            )
            self.ingress.spawn(Supervisor([spec]))
        else:
            self.dispatcher.spawn(mailbox=mailbox)
        self.nodes: dict[str, InferenceNode] = {}
        for name in nodes:
            pace = step[name] if isinstance(step, dict) else step
            engine = (engines or {}).get(name)
            self.nodes[name] = InferenceNode(self, name, slots, pace, announced, engine)
        self.streams: list[list[Reply]] = []
        self.finished: list[str] = []

    @property
    def clock(self) -> Clock:
        return self.ingress.clock

    def now(self) -> float:
        return self.kernel.now

    def run(self, main: Callable[[], Coroutine[Any, Any, _T]], until: float = 300.0) -> _T:
        result: _T = self.kernel.run_main(main, until=until)
        return result

    def serving(self) -> int:
        listings = self.dispatcher.models()
        return sum(listing.nodes for listing in listings if listing.model == MODEL)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        give_up = self.now() + timeout
        while not predicate():
            if self.now() > give_up:
                raise AssertionError("the condition never held")
            await self.clock.sleep(0.01)

    async def submit(
        self, req: GenerateRequest, *, tenant: str = "tenant-a", within: float = 30.0
    ) -> SchedulerSubmission:
        return await self.dispatcher.submit(req, tenant=tenant, deadline=self.now() + within)

    def read(self, submission: SchedulerSubmission, label: str = "") -> list[Reply]:
        """Read ``submission`` to its end in a task of its own; the stream
        fills as replies come."""
        stream: list[Reply] = []
        self.streams.append(stream)

        async def reader() -> None:
            async for reply in submission:
                stream.append(reply)
            self.finished.append(label)

        self.kernel.spawn(reader(), "reader")
        return stream

    async def wait_ended(self, *streams: list[Reply], timeout: float = 60.0) -> None:
        await self.wait_for(
            lambda: all(s and not isinstance(s[-1], GenerateChunk) for s in streams), timeout
        )

    def partition(self, node: str) -> None:
        """Cut ``node`` off from every other node."""
        self.network.partition([[node]])

    def check(self, *, closed: int = 0) -> CheckResult:
        """Every submission read to its end ended once (``closed`` were
        abandoned by their readers and are not read)."""
        stats = self.dispatcher.stats
        return every_submission_ends(stats.admitted - closed, self.streams)
