"""Actor runtime benchmarks against their anchors, measured in the same run.

* local tell throughput vs a bare trio memory channel (target >= 0.5x);
* local ask round trip vs a request/reply pair of bare memory channels;
* remote ask round trip over loopback TCP + Noise XX vs the same exchange
  (the same envelopes, length-prefixed) over plain loopback TCP
  (target <= 1.5x); the links are attested (simulated NitroTPMs), and the
  time to bring a link up (TCP, handshake, the attestation exchange bound to
  the handshake hash, the first ask) is reported next to it;
* simulation kernel events per wall-clock second.

Each figure is the median of several repetitions. Run:
``.venv/bin/python benchmarks/bench_actors.py [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import io
import statistics
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import Actor, ActorSystem, Context, MailboxFull, TrioDriver, open_actor_system
from actors.attestation import AttestationService, PeerAttestationVerifier
from actors.key_custody import NodeKeyCustody
from actors.log import configure_logging
from actors.remote import RemoteLayer
from nodes.clock import TrioClock
from nodes.random import SystemRandom
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    NitroAuthenticator,
    PcrPolicy,
    PcrRelease,
    TrustAnchor,
)
from protocol.messages import Envelope, Ping, Pong, decode_envelope, encode_envelope
from simulations.kernel._workload import KernelConfig, run_kernel_workload
from simulations.nitrotpm import PCR_COUNT, SimulatedNitroPKI, SimulatedNitroTPM

MAILBOX = 1024


# ---------------------------------------------------------------- local tell


async def bare_channel_throughput(n: int) -> float:
    send, receive = trio.open_memory_channel[int](MAILBOX)
    done = trio.Event()

    async def consumer() -> None:
        count = 0
        async for _ in receive:
            count += 1
            if count == n:
                done.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        start = time.perf_counter()
        for i in range(n):
            try:
                send.send_nowait(i)
            except trio.WouldBlock:
                await send.send(i)
        await done.wait()
        elapsed = time.perf_counter() - start
    return n / elapsed


class Counter(Actor):
    def __init__(self, n: int, done: trio.Event) -> None:
        self.n = n
        self.count = 0
        self.done = done

    async def receive(self, ctx: Context, message: object) -> object:
        self.count += 1
        if self.count == self.n:
            self.done.set()
        return None


async def actor_tell_throughput(n: int) -> float:
    done = trio.Event()
    async with open_actor_system(
        "bench", random=SystemRandom(), clock=TrioClock(), default_mailbox=MAILBOX
    ) as system:
        ref = system.spawn(Counter(n, done))
        start = time.perf_counter()
        for i in range(n):
            try:
                ref.tell(i)
            except MailboxFull:
                await ref.send(i)
        await done.wait()
        return n / (time.perf_counter() - start)


# ----------------------------------------------------------------- local ask


async def bare_ask_latency(n: int) -> float:
    req_send, req_recv = trio.open_memory_channel[int](MAILBOX)
    rep_send, rep_recv = trio.open_memory_channel[int](MAILBOX)

    async def server() -> None:
        async for value in req_recv:
            await rep_send.send(value)

    samples = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        for i in range(n):
            start = time.perf_counter()
            await req_send.send(i)
            await rep_recv.receive()
            samples.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return statistics.median(samples)


class Echo(Actor):
    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Ping):
            return Pong(message.nonce)
        return message


async def actor_ask_latency(n: int) -> float:
    samples = []
    async with open_actor_system("bench", random=SystemRandom(), clock=TrioClock()) as system:
        ref = system.spawn(Echo())
        for i in range(n):
            start = time.perf_counter()
            await ref.ask(i, 5.0)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


# ---------------------------------------------------------------- remote ask


async def plain_tcp_ask_latency(n: int) -> float:
    """The same exchange without Noise or actors: a length-prefixed
    Ping envelope over loopback TCP, answered with a Pong envelope."""

    async def read_exact(stream: trio.SocketStream, count: int, buffer: bytearray) -> bytes:
        while len(buffer) < count:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise EOFError
            buffer.extend(chunk)
        data = bytes(buffer[:count])
        del buffer[:count]
        return data

    async def read_frame(stream: trio.SocketStream, buffer: bytearray) -> bytes:
        header = await read_exact(stream, 2, buffer)
        return await read_exact(stream, int.from_bytes(header, "big"), buffer)

    def frame(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data

    async def handler(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        try:
            while True:
                request = decode_envelope(await read_frame(stream, buffer))
                assert isinstance(request.body, Ping)
                reply = Envelope.wrap(Pong(request.body.nonce), request_id=request.request_id)
                await stream.send_all(frame(encode_envelope(reply)))
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            return

    samples = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        buffer = bytearray()
        for i in range(n):
            start = time.perf_counter()
            await stream.send_all(frame(encode_envelope(Envelope.wrap(Ping(i), request_id=i + 1))))
            reply = decode_envelope(await read_frame(stream, buffer))
            assert isinstance(reply.body, Pong)
            samples.append(time.perf_counter() - start)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return statistics.median(samples)


def attested_transport(
    name: str, pki: SimulatedNitroPKI, rnd: SystemRandom
) -> tuple[TcpNoiseTransport, bytes]:
    """A node link endpoint on a simulated NitroTPM of ``pki``, admitting peers
    whose TPM booted like its own; and its static public key."""
    clock = TrioClock()
    tpm = SimulatedNitroTPM(seed=f"bench/{name}", pki=pki, clock=clock)
    custody = NodeKeyCustody(random=rnd)
    service = AttestationService(
        tpm=tpm,
        custody=custody,
        kind=DocumentKind.NITRO,
        clock=clock,
        run_blocking=trio.to_thread.run_sync,
    )
    policy = PcrPolicy(
        releases=(PcrRelease.from_mapping("bench", {i: tpm.pcr_read(i) for i in range(PCR_COUNT)}),)
    )
    verifier = PeerAttestationVerifier(
        verifier=AttestationVerifier([NitroAuthenticator(TrustAnchor.from_der(pki.root_der))]),
        policy=policy,
        clock=clock,
    )
    transport = TcpNoiseTransport(
        name,
        static=custody.static,
        random=rnd,
        peers={},
        attest=service.attest,
        verify_attestation=verifier,
        clock=clock,
    )
    return transport, custody.static_public


#: Link set-up times measured by noise_actor_ask_latency (seconds).
LINK_SETUP: list[float] = []


async def noise_actor_ask_latency(n: int) -> float:
    rnd = SystemRandom()
    pki = SimulatedNitroPKI("bench-actors")
    samples = []
    async with trio.open_nursery() as nursery:
        ta, key_a = attested_transport("a", pki, rnd)
        tb, key_b = attested_transport("b", pki, rnd)
        port_a = await nursery.start(ta.run)
        port_b = await nursery.start(tb.run)
        ta.add_peer("b", PeerAddress("127.0.0.1", port_b, key_b))
        tb.add_peer("a", PeerAddress("127.0.0.1", port_a, key_a))
        system_a = ActorSystem("a", TrioDriver(nursery, TrioClock()), random=rnd)
        system_b = ActorSystem("b", TrioDriver(nursery, TrioClock()), random=rnd)
        RemoteLayer(system_a, ta)
        RemoteLayer(system_b, tb)
        system_b.spawn(Echo(), name="echo")
        echo = system_a.ref("b", "echo")
        start = time.perf_counter()
        await echo.ask(Ping(0), 5.0)  # connect, handshake and attest outside the timing
        LINK_SETUP.append(time.perf_counter() - start)
        for i in range(n):
            start = time.perf_counter()
            reply = await echo.ask(Ping(i), 5.0)
            samples.append(time.perf_counter() - start)
            assert isinstance(reply, Pong)
        nursery.cancel_scope.cancel()
    return statistics.median(samples)


class PlainTcpTransport:
    """The Transport seam over plain TCP (no Noise), structured like
    TcpNoiseTransport (a queue and a writer task per peer, a reader task per
    connection), so that comparing the two isolates the secure channel."""

    def __init__(self, node: str) -> None:
        self._node = node
        self._events: Any = None
        self._ports: dict[str, int] = {}
        self._queues: dict[str, deque[bytes]] = {}
        self._ready: dict[str, trio.Event] = {}
        self._streams: dict[str, trio.SocketStream] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def local_node(self) -> str:
        return self._node

    def bind(self, events: Any) -> None:
        self._events = events

    def add_peer(self, node: str, port: int) -> None:
        self._ports[node] = port

    def send(self, peer: str, frame: bytes) -> bool:
        if peer not in self._ports:
            return False
        if peer not in self._queues:
            self._queues[peer] = deque()
            self._ready[peer] = trio.Event()
            assert self._nursery is not None
            self._nursery.start_soon(self._writer, peer)
        self._queues[peer].append(frame)
        self._ready[peer].set()
        return True

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, self._accepted, 0, host="127.0.0.1")
            )
            task_status.started(listeners[0].socket.getsockname()[1])

    async def _accepted(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        peer = (await _read_frame(stream, buffer)).decode()
        await self._read(peer, stream, buffer)

    async def _writer(self, peer: str) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", self._ports[peer])
        await stream.send_all(_frame(self._node.encode()))
        assert self._nursery is not None
        self._nursery.start_soon(self._read, peer, stream, bytearray())
        queue = self._queues[peer]
        while True:
            await self._ready[peer].wait()
            if not queue:
                self._ready[peer] = trio.Event()
                continue
            await stream.send_all(_frame(queue.popleft()))

    async def _read(self, peer: str, stream: trio.SocketStream, buffer: bytearray) -> None:
        try:
            while True:
                self._events.frame_received(peer, await _read_frame(stream, buffer))
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            return


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


async def _read_exact(stream: trio.SocketStream, count: int, buffer: bytearray) -> bytes:
    while len(buffer) < count:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError
        buffer.extend(chunk)
    data = bytes(buffer[:count])
    del buffer[:count]
    return data


async def _read_frame(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    header = await _read_exact(stream, 4, buffer)
    return await _read_exact(stream, int.from_bytes(header, "big"), buffer)


async def plain_actor_ask_latency(n: int) -> float:
    """The remote ask of noise_actor_ask_latency, over plain TCP."""
    rnd = SystemRandom()
    samples = []
    async with trio.open_nursery() as nursery:
        ta, tb = PlainTcpTransport("a"), PlainTcpTransport("b")
        port_a = await nursery.start(ta.run)
        port_b = await nursery.start(tb.run)
        ta.add_peer("b", port_b)
        tb.add_peer("a", port_a)
        system_a = ActorSystem("a", TrioDriver(nursery, TrioClock()), random=rnd)
        system_b = ActorSystem("b", TrioDriver(nursery, TrioClock()), random=rnd)
        RemoteLayer(system_a, ta)
        RemoteLayer(system_b, tb)
        system_b.spawn(Echo(), name="echo")
        echo = system_a.ref("b", "echo")
        await echo.ask(Ping(0), 5.0)
        for i in range(n):
            start = time.perf_counter()
            reply = await echo.ask(Ping(i), 5.0)
            samples.append(time.perf_counter() - start)
            assert isinstance(reply, Pong)
        nursery.cancel_scope.cancel()
    return statistics.median(samples)


# ------------------------------------------------------------------ harness


async def _zero() -> float:
    return 0.0


def paired(
    repeats: int, first: Callable[[], Awaitable[float]], second: Callable[[], Awaitable[float]]
) -> tuple[float, float]:
    """Medians of ``first`` and ``second``, run alternately so that both see
    the same machine load (the machine is shared)."""
    a, b = [], []
    for _ in range(repeats):
        a.append(trio.run(first))
        b.append(trio.run(second))
    return statistics.median(a), statistics.median(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else 5
    n_tell = 50_000 if args.quick else 200_000
    n_ask = 2_000 if args.quick else 10_000
    n_remote = 500 if args.quick else 3_000

    configure_logging(io.StringIO(), level="error")  # the kernel workload crashes on purpose
    bare_tput, actor_tput = paired(
        reps, lambda: bare_channel_throughput(n_tell), lambda: actor_tell_throughput(n_tell)
    )
    print(
        f"local tell: actor {actor_tput:,.0f} msg/s, bare memory channel {bare_tput:,.0f} msg/s, "
        f"ratio {actor_tput / bare_tput:.2f}x (target >= 0.5x)"
    )

    bare_ask, actor_ask = paired(
        reps, lambda: bare_ask_latency(n_ask), lambda: actor_ask_latency(n_ask)
    )
    print(
        f"local ask round trip: actor {actor_ask * 1e6:.1f} us, bare channels "
        f"{bare_ask * 1e6:.1f} us, ratio {actor_ask / bare_ask:.2f}x"
    )

    plain, noise = paired(
        reps, lambda: plain_actor_ask_latency(n_remote), lambda: noise_actor_ask_latency(n_remote)
    )
    raw, _ = paired(reps, lambda: plain_tcp_ask_latency(n_remote), lambda: _zero())
    print(
        f"remote ask round trip: actors over TCP + Noise {noise * 1e6:.1f} us, the same ask "
        f"over plain TCP {plain * 1e6:.1f} us, ratio {noise / plain:.2f}x (target <= 1.5x)"
    )
    print(
        f"  for reference, a bare Ping/Pong envelope exchange over plain TCP (no actors): "
        f"{raw * 1e6:.1f} us; actors + Noise / bare = {noise / raw:.2f}x"
    )
    print(
        f"  attested link set-up (TCP, Noise XX, both documents over the handshake hash "
        f"made and verified, first ask): {statistics.median(LINK_SETUP) * 1e3:.1f} ms"
    )

    rates = []
    for seed in range(1, reps + 1):
        result = run_kernel_workload(
            KernelConfig(seed=seed, messages=5_000 if args.quick else 20_000)
        )
        rates.append(result.events / result.wall_seconds)
    print(
        f"simulation kernel: {statistics.median(rates):,.0f} events per wall-clock second "
        f"(median of {reps} runs of the default workload)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
