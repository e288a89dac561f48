"""The simulated network: the Transport seam in memory, with per-link latency
distributions, loss, duplication, reordering and partitions.

Model
-----
Every pair of nodes has one connection (like the TCP + Noise link of real
nodes) that starts established. A frame sent on it is lost with the link's
``loss`` probability, otherwise delivered after a latency drawn from the
link's distribution; with ``duplicate`` probability a second copy travels
with its own latency, and with ``reorder`` probability a copy is held back by
an extra ``reorder_delay`` so that later frames overtake it. Frames reaching
a node that the partition separates from the sender are dropped.

A partition cuts reachability at once; each connection across it is declared
lost ``detect_after`` seconds later (a heartbeat timeout), both ends get
``peer_down`` and start redialling on the shared :class:`Backoff` schedule.
A redial succeeds once the partition has healed; both ends then get
``peer_up``. Frames in flight on a connection that was lost are dropped
(a new connection does not carry an old one's bytes).

All draws come from the run's single :class:`RecordedRandom`; every send,
delivery and drop is written to the trace.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from actors.lowlevel import Backoff
from actors.seams.transport import TransportEvents
from simulations.kernel import Kernel
from simulations.random import RecordedRandom
from simulations.trace import TraceRecorder


class Latency(Protocol):
    def sample(self, rng: RecordedRandom) -> float: ...


@dataclass(frozen=True, slots=True)
class Fixed:
    seconds: float

    def sample(self, rng: RecordedRandom) -> float:
        return self.seconds


@dataclass(frozen=True, slots=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: RecordedRandom) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True, slots=True)
class Exponential:
    mean: float
    floor: float = 0.0

    def sample(self, rng: RecordedRandom) -> float:
        return self.floor + rng.exponential(self.mean)


@dataclass(frozen=True, slots=True)
class LogNormal:
    median: float
    sigma: float

    def sample(self, rng: RecordedRandom) -> float:
        return self.median * math.exp(self.sigma * rng.normal())


@dataclass(frozen=True, slots=True)
class LinkProfile:
    latency: Latency = Uniform(0.0005, 0.003)
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: Latency = Uniform(0.002, 0.02)


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    cut: int = 0
    refused: int = 0
    partitions: int = 0
    heals: int = 0
    links_lost: int = 0
    links_restored: int = 0


class _Link:
    __slots__ = ("a", "b", "generation", "redialling", "up")

    def __init__(self, a: str, b: str) -> None:
        self.a = a
        self.b = b
        self.up = True
        self.generation = 0
        self.redialling = False


class SimTransport:
    """One node's end of the simulated network (the Transport seam)."""

    def __init__(self, network: SimNetwork, node: str) -> None:
        self._network = network
        self._node = node
        self.events: TransportEvents | None = None

    @property
    def local_node(self) -> str:
        return self._node

    def bind(self, events: TransportEvents) -> None:
        self.events = events

    def send(self, peer: str, frame: bytes) -> bool:
        return self._network.transmit(self._node, peer, frame)


class SimNetwork:
    def __init__(
        self,
        kernel: Kernel,
        rng: RecordedRandom,
        trace: TraceRecorder,
        *,
        default: LinkProfile | None = None,
        detect_after: float = 0.25,
        backoff: Backoff | None = None,
    ) -> None:
        self._kernel = kernel
        self._rng = rng
        self._trace = trace
        self._default = default if default is not None else LinkProfile()
        self._detect_after = detect_after
        self._backoff = backoff if backoff is not None else Backoff(0.05, 2.0, 1.0, 0.5)
        self._endpoints: dict[str, SimTransport] = {}
        self._profiles: dict[tuple[str, str], LinkProfile] = {}
        self._links: dict[tuple[str, str], _Link] = {}
        self._group_of: dict[str, int] | None = None
        self.stats = NetworkStats()

    # ------------------------------------------------------------ topology

    def endpoint(self, node: str) -> SimTransport:
        if node in self._endpoints:
            raise ValueError(f"node {node!r} already has an endpoint")
        endpoint = SimTransport(self, node)
        self._endpoints[node] = endpoint
        return endpoint

    def set_profile(self, src: str, dst: str, profile: LinkProfile) -> None:
        """The profile of frames from ``src`` to ``dst`` (one direction)."""
        self._profiles[(src, dst)] = profile

    def _link(self, a: str, b: str) -> _Link:
        key = (a, b) if a < b else (b, a)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _Link(*key)
        return link

    def reachable(self, a: str, b: str) -> bool:
        groups = self._group_of
        return groups is None or groups.get(a, -1) == groups.get(b, -1)

    def is_connected(self, a: str, b: str) -> bool:
        return self._link(a, b).up

    # ------------------------------------------------------------- frames

    def transmit(self, src: str, dst: str, frame: bytes) -> bool:
        if dst not in self._endpoints or dst == src:
            return False
        link = self._link(src, dst)
        if not link.up:
            self.stats.refused += 1
            self._trace.record("net.refused", src, dst, len(frame))
            return False
        self.stats.sent += 1
        self._trace.record("net.send", src, dst, len(frame))
        rng = self._rng
        profile = self._profiles.get((src, dst), self._default)
        if rng.chance(profile.loss):
            self.stats.lost += 1
            self._trace.record("net.lost", src, dst)
            return True
        copies = 1
        if rng.chance(profile.duplicate):
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            delay = profile.latency.sample(rng)
            if rng.chance(profile.reorder):
                delay += profile.reorder_delay.sample(rng)
                self.stats.reordered += 1
            self._kernel.call_later(delay, self._arrive, src, dst, frame, link.generation)
        return True

    def _arrive(self, src: str, dst: str, frame: bytes, generation: int) -> None:
        link = self._link(src, dst)
        if not link.up or link.generation != generation or not self.reachable(src, dst):
            self.stats.cut += 1
            self._trace.record("net.cut", src, dst)
            return
        self.stats.delivered += 1
        self._trace.record("net.deliver", src, dst, len(frame))
        events = self._endpoints[dst].events
        if events is not None:
            events.frame_received(src, frame)

    # --------------------------------------------------------- partitions

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Split the nodes into ``groups``; nodes not named form one more group."""
        group_of: dict[str, int] = {}
        for index, group in enumerate(groups):
            for node in group:
                group_of[node] = index
        rest = len(groups)
        for node in self._endpoints:
            group_of.setdefault(node, rest)
        self._group_of = group_of
        self.stats.partitions += 1
        self._trace.record("net.partition", ";".join(",".join(g) for g in map(sorted, groups)))
        for link in list(self._links.values()) + self._missing_links():
            if link.up and not self.reachable(link.a, link.b):
                self._kernel.call_later(self._detect_after, self._detect, link)

    def _missing_links(self) -> list[_Link]:
        nodes = sorted(self._endpoints)
        missing = []
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                if (a, b) not in self._links:
                    missing.append(self._link(a, b))
        return missing

    def heal(self) -> None:
        """Remove the partition; lost connections come back on their redial schedule."""
        self._group_of = None
        self.stats.heals += 1
        self._trace.record("net.heal")

    def _detect(self, link: _Link) -> None:
        if not link.up or self.reachable(link.a, link.b):
            return
        link.up = False
        link.generation += 1
        self.stats.links_lost += 1
        self._trace.record("net.link_down", link.a, link.b)
        for here, there in ((link.a, link.b), (link.b, link.a)):
            events = self._endpoints[here].events
            if events is not None:
                events.peer_down(there)
        if not link.redialling:
            link.redialling = True
            self._redial(link, 0)

    def _redial(self, link: _Link, attempt: int) -> None:
        delay = self._backoff.delay(attempt, self._rng)
        self._kernel.call_later(delay, self._attempt, link, attempt)

    def _attempt(self, link: _Link, attempt: int) -> None:
        if link.up:
            link.redialling = False
            return
        if not self.reachable(link.a, link.b):
            self._trace.record("net.redial_failed", link.a, link.b, attempt)
            self._redial(link, attempt + 1)
            return
        link.up = True
        link.redialling = False
        link.generation += 1
        self.stats.links_restored += 1
        self._trace.record("net.link_up", link.a, link.b, attempt)
        for here, there in ((link.a, link.b), (link.b, link.a)):
            events = self._endpoints[here].events
            if events is not None:
                events.peer_up(there)
