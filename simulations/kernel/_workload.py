"""The built-in workload of ``mantle-sim kernel``.

Several simulated nodes, each running the real actor runtime with a
supervision tree (one_for_one, rest_for_one and one_for_all groups of
workers, plus client actors). Clients tell and ask workers on every node by
registered name; workers sometimes ask another worker before replying. The
network loses, duplicates and reorders frames and is partitioned for a while;
the fault injector crashes workers at random. Every ``Work`` message carries
a canary string standing in for customer data, and some are poisoned so that
the handler raises with the canary in the exception text: crash reports must
never show it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from actors import (
    Actor,
    ActorCrashed,
    ActorError,
    ActorRef,
    ActorStopped,
    ActorSystem,
    AskTimeout,
    ChildSpec,
    Context,
    CrashReport,
    MailboxFull,
    NoSuchActor,
    PeerUnavailable,
    Restart,
    Strategy,
    Supervisor,
)
from actors.remote import RemoteLayer
from protocol.messages import U8, U64, MaxLen, message
from simulations import checkers
from simulations.faults import FaultInjector
from simulations.kernel._driver import SimDriver
from simulations.kernel._loop import Kernel
from simulations.network import LinkProfile, SimNetwork, Uniform
from simulations.random import RecordedRandom
from simulations.trace import TraceRecorder

CANARY = "CANARY-kernel-7f3a9c-customer-text"


@message("sim.work")
@dataclasses.dataclass(frozen=True, slots=True)
class Work:
    op: U64
    hops: U8
    poison: bool
    note: Annotated[str, MaxLen(256)]


@message("sim.done")
@dataclasses.dataclass(frozen=True, slots=True)
class Done:
    op: U64


@dataclasses.dataclass(frozen=True, slots=True)
class _Tick:
    """A client's timer (node-local, never on the wire)."""


@dataclass(frozen=True, slots=True)
class KernelConfig:
    seed: int
    nodes: int = 5
    actors: int = 50
    messages: int = 20000
    clients_per_node: int = 2
    tell_fraction: float = 0.4
    nested_fraction: float = 0.2
    poison_fraction: float = 0.002
    crash_rate: float = 2.0
    loss: float = 0.01
    duplicate: float = 0.005
    reorder: float = 0.02
    ask_timeout: float = 0.3
    think_mean: float = 0.004
    partition_at: float = 2.0
    heal_at: float = 4.0
    max_virtual_time: float = 3600.0

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.actors < self.nodes or self.messages < 0:
            raise ValueError("need nodes >= 1, actors >= nodes, messages >= 0")


@dataclass(slots=True)
class Ledger:
    budget: int
    taken: int = 0
    finished: int = 0
    tells_sent: int = 0
    tells_refused: int = 0
    asks_issued: int = 0
    mismatched: int = 0
    nested_ok: int = 0
    nested_failed: int = 0
    ask_outcomes: dict[str, int] = field(default_factory=dict)

    def take(self) -> int | None:
        if self.taken >= self.budget:
            return None
        self.taken += 1
        return self.taken

    def ended(self, outcome: str) -> None:
        self.ask_outcomes[outcome] = self.ask_outcomes.get(outcome, 0) + 1

    def done(self) -> bool:
        return self.finished >= self.budget


_OUTCOMES: tuple[tuple[type[ActorError], str], ...] = (
    (AskTimeout, "timeout"),
    (PeerUnavailable, "unavailable"),
    (ActorCrashed, "crashed"),
    (NoSuchActor, "noproc"),
    (MailboxFull, "full"),
    (ActorStopped, "stopped"),
)


def _outcome(error: ActorError) -> str:
    for kind, name in _OUTCOMES:
        if isinstance(error, kind):
            return name
    return "other"


class Worker(Actor):
    def __init__(
        self, directory: tuple[tuple[str, str], ...], ledger: Ledger, timeout: float
    ) -> None:
        self._directory = directory
        self._ledger = ledger
        self._timeout = timeout

    async def receive(self, ctx: Context, message: object) -> object:
        if not isinstance(message, Work):
            return None
        if message.poison:
            # The exception text quotes the message: exactly what a crash
            # report must never repeat.
            raise ValueError(f"cannot process {message.note}")
        if message.hops:
            node, name = self._directory[ctx.random.randbelow(len(self._directory))]
            try:
                await ctx.system.ref(node, name).ask(
                    Work(message.op, message.hops - 1, False, message.note),
                    self._timeout / 2,
                    sender=ctx.self,
                )
                self._ledger.nested_ok += 1
            except ActorError:
                self._ledger.nested_failed += 1
        return Done(message.op)


class Client(Actor):
    def __init__(
        self,
        directory: tuple[tuple[str, str], ...],
        ledger: Ledger,
        config: KernelConfig,
        trace: TraceRecorder,
    ) -> None:
        self._directory = directory
        self._ledger = ledger
        self._config = config
        self._trace = trace

    def _schedule(self, ctx: Context) -> None:
        delay = -self._config.think_mean * _log1m(ctx.random.random())
        ctx.send_after(delay, ctx.self, _Tick())

    async def started(self, ctx: Context) -> None:
        self._schedule(ctx)

    async def receive(self, ctx: Context, message: object) -> object:
        if not isinstance(message, _Tick):
            return None
        ledger = self._ledger
        op = ledger.take()
        if op is None:
            return None
        config = self._config
        rnd = ctx.random
        node, name = self._directory[rnd.randbelow(len(self._directory))]
        hops = 1 if rnd.random() < config.nested_fraction else 0
        poison = rnd.random() < config.poison_fraction
        work = Work(op, hops, poison, f"{CANARY}:{op}")
        target = ctx.system.ref(node, name)
        if rnd.random() < config.tell_fraction:
            try:
                target.tell(work, sender=ctx.self)
                ledger.tells_sent += 1
                self._trace.record("op.tell", op, node, name, "sent")
            except ActorError as error:
                ledger.tells_refused += 1
                self._trace.record("op.tell", op, node, name, _outcome(error))
        else:
            ledger.asks_issued += 1
            try:
                reply = await target.ask(work, config.ask_timeout, sender=ctx.self)
            except ActorError as error:
                outcome = _outcome(error)
            else:
                outcome = "ok"
                if not isinstance(reply, Done) or reply.op != op:
                    ledger.mismatched += 1
            ledger.ended(outcome)
            self._trace.record("op.ask", op, node, name, outcome)
        ledger.finished += 1
        self._schedule(ctx)
        return None


def _log1m(u: float) -> float:
    return math.log(1.0 - u)


@dataclass(frozen=True, slots=True)
class KernelResult:
    config: KernelConfig
    trace_sha256: str
    virtual_time: float
    events: int
    wall_seconds: float
    draws: int
    ledger: Ledger
    crashes: int
    crashes_injected: int
    restarts: int
    escalations: int
    spawned: int
    network: dict[str, int]
    checks: tuple[checkers.CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def summary(self) -> str:
        c = self.config
        led = self.ledger
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(led.ask_outcomes.items()))
        net = self.network
        rate = self.events / self.wall_seconds if self.wall_seconds > 0 else 0.0
        lines = [
            f"mantle-sim kernel: seed={c.seed} nodes={c.nodes} actors={c.actors} "
            f"messages={c.messages}",
            f"virtual time {self.virtual_time:.3f} s; kernel events {self.events}; "
            f"wall {self.wall_seconds:.2f} s ({rate:,.0f} events/s); recorded draws {self.draws}",
            f"operations {led.finished}/{led.taken}: tells sent {led.tells_sent}, refused "
            f"{led.tells_refused}; asks {led.asks_issued} ({outcomes}); nested asks ok "
            f"{led.nested_ok}, failed {led.nested_failed}",
            f"supervision: actors spawned {self.spawned}, crashes {self.crashes} "
            f"(injected {self.crashes_injected}), restarts {self.restarts}, "
            f"escalations {self.escalations}",
            "network: " + ", ".join(f"{k} {v}" for k, v in net.items()),
        ]
        for check in self.checks:
            status = "ok" if check.ok else "FAILED: " + "; ".join(check.violations[:5])
            lines.append(f"check {check.name}: {status}")
        lines.append(f"trace sha256: {self.trace_sha256}")
        return "\n".join(lines)


def _node_tree(
    worker_names: list[str],
    client_names: list[str],
    make_worker: Callable[[], Actor],
    make_client: Callable[[], Actor],
) -> Supervisor:
    groups: list[list[str]] = [[], [], []]
    for index, name in enumerate(worker_names):
        groups[index % 3].append(name)
    strategies = (Strategy.ONE_FOR_ONE, Strategy.REST_FOR_ONE, Strategy.ONE_FOR_ALL)

    def group(names: list[str], strategy: Strategy) -> Callable[[], Actor]:
        specs = [ChildSpec(name, make_worker, Restart.PERMANENT, 0.5, name=name) for name in names]
        return lambda: Supervisor(specs, strategy=strategy, intensity=1, period=1.0)

    children = [
        ChildSpec(f"workers_{s.value}", group(names, s), Restart.PERMANENT, None)
        for names, s in zip(groups, strategies, strict=True)
        if names
    ]
    client_specs = [
        ChildSpec(name, make_client, Restart.PERMANENT, 0.5, name=name) for name in client_names
    ]
    children.append(
        ChildSpec(
            "clients",
            lambda: Supervisor(client_specs, strategy=Strategy.ONE_FOR_ONE),
            Restart.PERMANENT,
            None,
        )
    )
    return Supervisor(children, strategy=Strategy.ONE_FOR_ONE, intensity=100, period=1.0)


def run_kernel_workload(config: KernelConfig) -> KernelResult:
    started = time.perf_counter()
    kernel = Kernel()
    trace = TraceRecorder(lambda: kernel.now)
    rng = RecordedRandom(config.seed, trace)
    trace.record("run.config", *(str(v) for v in dataclasses.astuple(config)))
    nodes = [f"n{i}" for i in range(config.nodes)]
    profile = LinkProfile(
        latency=Uniform(0.0005, 0.004),
        loss=config.loss,
        duplicate=config.duplicate,
        reorder=config.reorder,
        reorder_delay=Uniform(0.002, 0.02),
    )
    network = SimNetwork(kernel, rng, trace, default=profile)
    reports: list[CrashReport] = []

    def on_crash(report: CrashReport) -> None:
        reports.append(report)
        trace.record("actor.crash", report.actor, report.exc_type, report.location)

    systems: list[ActorSystem] = []
    for node in nodes:
        system = ActorSystem(node, SimDriver(kernel), random=rng, on_crash=on_crash)
        RemoteLayer(system, network.endpoint(node))
        systems.append(system)

    workers_of: dict[str, list[str]] = {node: [] for node in nodes}
    for index in range(config.actors):
        workers_of[nodes[index % len(nodes)]].append(f"w{index}")
    directory = tuple((node, name) for node in nodes for name in workers_of[node])
    clients_of = {node: [f"c{node}.{j}" for j in range(config.clients_per_node)] for node in nodes}
    ledger = Ledger(config.messages)

    for system in systems:
        tree = _node_tree(
            workers_of[system.node],
            clients_of[system.node],
            lambda: Worker(directory, ledger, config.ask_timeout),
            lambda: Client(directory, ledger, config, trace),
        )
        system.spawn(tree, name="root")

    faults = FaultInjector(kernel, rng, trace, systems)
    if config.nodes > 1 and config.heal_at > config.partition_at:
        shuffled = list(nodes)
        for i in range(len(shuffled) - 1, 0, -1):
            j = rng.randbelow(i + 1)
            shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
        half = len(shuffled) // 2
        faults.schedule_partition(
            network, [shuffled[:half], shuffled[half:]], config.partition_at, config.heal_at
        )

    def live_workers() -> list[ActorRef]:
        refs = []
        for system in systems:
            for name in workers_of[system.node]:
                ref = system.whereis(name)
                if ref is not None:
                    refs.append(ref)
        return refs

    faults.crash_actors(config.crash_rate, live_workers, lambda: not ledger.done())
    kernel.run(until=config.max_virtual_time)

    names_by_node = {node: [*workers_of[node], *clients_of[node], "root"] for node in nodes}
    net = network.stats
    checks = (
        checkers.every_request_ends(
            ledger.taken, ledger.finished, ledger.asks_issued, ledger.ask_outcomes
        ),
        checkers.crash_reports_clean(reports, [CANARY]),
        checkers.supervision_restored(systems, names_by_node),
        checkers.frames_conserved(net),
        checkers.replies_match(ledger.mismatched),
    )
    for check in checks:
        trace.record("check", check.name, check.ok)
    return KernelResult(
        config=config,
        trace_sha256=trace.hexdigest(),
        virtual_time=kernel.now,
        events=kernel.events,
        wall_seconds=time.perf_counter() - started,
        draws=rng.draws,
        ledger=ledger,
        crashes=sum(s.stats.crashes for s in systems),
        crashes_injected=faults.crashes_injected,
        restarts=sum(s.stats.restarts for s in systems),
        escalations=sum(s.stats.escalations for s in systems),
        spawned=sum(s.stats.spawned for s in systems),
        network=dataclasses.asdict(net),
        checks=checks,
    )
