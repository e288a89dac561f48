"""``mantle.Client`` end to end against the plain OpenAI-compatible path, and what its checks cost.

Run: .venv/bin/python benchmarks/bench_client.py [--pairs N] [--max-tokens N] [--quick]

What is measured, all in one run on this machine, against one dev cluster
(``nodes.devcluster``: keys, ingress and one inference node, separate
processes, simulated NitroTPMs) serving SmolLM2-135M-Instruct on the llama
engine:

1. **End to end against the plain path.** One streamed chat completion at a
   time, the same prompt, ``max_tokens``, temperature 0 and seed on both
   sides, measured alternately (pairs, the order flipping each pair):
   * ``mantle.Client``: ``client.chat.completions.create(..., stream=True)``,
     sealed to the node the client verified, sent as ``POST /v1/mantle/chat``
     and opened record by record on this side;
   * the baseline: the official ``openai`` SDK on ``POST /v1/chat/completions``
     over TLS pinned to the ingress's certificate (the ingress sees the text).
   Both are blocking clients in a worker thread of this process. Reported:
   medians over the pairs of the time to first token (request sent -> first
   content delta) and decode tokens/s: (completion tokens - 1) / (last delta -
   first delta), completion tokens as each side's usage reports them (target:
   end to end >= 0.97x the plain path).
2. **The first verification.** A new ``mantle.AsyncClient`` (pins read, TLS
   context built) running the trust walk for the model: the release bundle
   against the pins and the floor, the log's tree head and its consistency
   proofs, the node documents over a fresh nonce. Wall time, median of
   several fresh clients, each with an empty trust state (a first run) and
   again with the trust state an earlier run stored (a returning user: the
   log's head is also checked against the stored one).
3. **A cached verification, per request.** On a warm client the request path
   asks ``verified_nodes(model)`` before it seals; within the freshness window
   that is the cached set. Median over many calls, in µs (target <= 1 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import httpx2
import openai

import mantle
from mantle import pinned_tls_context
from nodes.devcluster import ClusterLayout, DevCluster, DevClusterSettings, EngineKind

PROMPT = "Write a short paragraph about the sea."
SEED = 1


@dataclass(frozen=True)
class Sample:
    ttft_s: float
    decode_tokens_per_s: float
    completion_tokens: int
    #: The largest gap between two content deltas (a stall shows here).
    max_gap_s: float


def _decode_rate(tokens: int, first: float, last: float) -> float:
    if tokens < 2 or last <= first:
        return float("nan")
    return (tokens - 1) / (last - first)


def _timed_stream(stream: object, start: float) -> Sample:
    """First and last content delta of a stream of the SDK's chunks, and its usage."""
    first = last = None
    tokens = 0
    max_gap = 0.0
    for chunk in stream:  # type: ignore[attr-defined]
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                now = time.perf_counter()
                max_gap = max(max_gap, now - last) if last is not None else 0.0
                first = first if first is not None else now
                last = now
    assert first is not None and last is not None
    return Sample(first - start, _decode_rate(tokens, first, last), tokens, max_gap)


def _request(model: str, max_tokens: int) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": SEED,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def through_mantle(client: mantle.Client, model: str, max_tokens: int) -> Sample:
    start = time.perf_counter()
    stream = client.chat.completions.create(**_request(model, max_tokens))
    sample = _timed_stream(stream, start)
    assert stream.receipt is not None
    return sample


def through_plain(client: openai.OpenAI, model: str, max_tokens: int) -> Sample:
    start = time.perf_counter()
    stream = client.chat.completions.create(**_request(model, max_tokens))  # type: ignore[call-overload]
    return _timed_stream(stream, start)


def _plain_client(cluster: DevCluster) -> openai.OpenAI:
    http = httpx2.Client(verify=pinned_tls_context(cluster.tls_cert.read_bytes()), timeout=300)
    return openai.OpenAI(base_url=cluster.url + "/v1", api_key=cluster.api_key, http_client=http)


def _pins(cluster: DevCluster) -> Path:
    return ClusterLayout(cluster.data_dir).pins_dir


def _async_client(cluster: DevCluster, trust_state: Path) -> mantle.AsyncClient:
    """A user of the cluster: its pins, the ingress's certificate, a trust state of its own."""
    pins = _pins(cluster)
    return mantle.AsyncClient(
        cluster.url,
        cluster.api_key,
        attestation_root=pins / mantle.ATTESTATION_ROOT_PIN,
        release_root=pins / mantle.RELEASE_ROOT_PIN,
        tlog_key=pins / mantle.LOG_KEY_PIN,
        tls_cert=cluster.tls_cert,
        trust_state=trust_state,
    )


def _blocking_client(cluster: DevCluster, trust_state: Path) -> mantle.Client:
    """:func:`_async_client`'s user, with the blocking client."""
    pins = _pins(cluster)
    return mantle.Client(
        cluster.url,
        cluster.api_key,
        attestation_root=pins / mantle.ATTESTATION_ROOT_PIN,
        release_root=pins / mantle.RELEASE_ROOT_PIN,
        tlog_key=pins / mantle.LOG_KEY_PIN,
        tls_cert=cluster.tls_cert,
        trust_state=trust_state,
    )


def _median(values: list[float]) -> float:
    return statistics.median(values)


async def end_to_end(
    cluster: DevCluster, model: str, scratch: Path, pairs: int, max_tokens: int
) -> None:
    plain = _plain_client(cluster)
    with _blocking_client(cluster, scratch / "e2e" / "trust.json") as client:
        # Warm-up, both sides: connections open, the client's walk done, allocations paid.
        await anyio.to_thread.run_sync(through_mantle, client, model, 8)
        await anyio.to_thread.run_sync(through_plain, plain, model, 8)
        sealed: list[Sample] = []
        base: list[Sample] = []
        for pair in range(pairs):
            order = (0, 1) if pair % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    base.append(
                        await anyio.to_thread.run_sync(through_plain, plain, model, max_tokens)
                    )
                else:
                    sealed.append(
                        await anyio.to_thread.run_sync(through_mantle, client, model, max_tokens)
                    )
    plain.close()
    b_ttft = _median([s.ttft_s for s in base])
    m_ttft = _median([s.ttft_s for s in sealed])
    b_rate = _median([s.decode_tokens_per_s for s in base])
    m_rate = _median([s.decode_tokens_per_s for s in sealed])
    print(
        f"end to end, {pairs} pairs, max_tokens {max_tokens} "
        f"(completion tokens: plain {sorted({s.completion_tokens for s in base})}, "
        f"mantle.Client {sorted({s.completion_tokens for s in sealed})})"
    )
    print(
        f"  TTFT   plain {b_ttft * 1000:7.1f} ms   mantle.Client {m_ttft * 1000:7.1f} ms   "
        f"difference {(m_ttft - b_ttft) * 1000:+.1f} ms"
    )
    print(
        f"  decode plain {b_rate:7.1f} tok/s mantle.Client {m_rate:7.1f} tok/s "
        f"ratio {m_rate / b_rate:.3f}x (target >= 0.97x)"
    )
    per_pair = ", ".join(
        f"{b.decode_tokens_per_s:.0f}/{m.decode_tokens_per_s:.0f}"
        for b, m in zip(base, sealed, strict=True)
    )
    b_gap = _median([s.max_gap_s for s in base])
    m_gap = _median([s.max_gap_s for s in sealed])
    print(
        f"  (tok/s per pair, plain/mantle.Client: {per_pair}; largest gap between deltas, "
        f"median: plain {b_gap * 1000:.0f} ms, mantle.Client {m_gap * 1000:.0f} ms)"
    )


async def first_verification(cluster: DevCluster, model: str, scratch: Path, clients: int) -> None:
    async def one(trust_state: Path) -> tuple[float, float]:
        started = time.perf_counter()
        async with _async_client(cluster, trust_state) as client:
            walk_began = time.perf_counter()
            verified = await client.verify(model)
            ended = time.perf_counter()
        assert verified.nodes and not verified.refused
        return ended - started, ended - walk_began

    for label, returning in (("empty trust state", False), ("stored trust state", True)):
        totals: list[float] = []
        walks: list[float] = []
        if returning:
            await one(scratch / "verify" / "returning" / "trust.json")  # the earlier run
        for index in range(clients):
            name = "returning" if returning else f"first-{index}"
            total, walk = await one(scratch / "verify" / name / "trust.json")
            totals.append(total)
            walks.append(walk)
        print(
            f"first verification, new client, {label}, median of {clients}: "
            f"{_median(totals) * 1000:6.1f} ms (the walk alone {_median(walks) * 1000:6.1f} ms)"
        )


async def cached_verification(cluster: DevCluster, model: str, scratch: Path, calls: int) -> None:
    async with _async_client(cluster, scratch / "warm" / "t.json") as client:
        first = await client.verify(model)
        durations: list[int] = []
        for _ in range(calls):
            began = time.perf_counter_ns()
            nodes = await client.verified_nodes(model)
            durations.append(time.perf_counter_ns() - began)
            assert nodes is first
    median_us = _median([float(d) for d in durations]) / 1000
    print(
        f"cached verification per request (verified_nodes on a warm client, {calls} calls): "
        f"median {median_us:.2f} µs, p99 {sorted(durations)[calls * 99 // 100] / 1000:.2f} µs "
        f"(target <= 1000 µs)"
    )


def run(pairs: int, max_tokens: int, clients: int, calls: int) -> None:
    async def main() -> None:
        load = os.getloadavg()
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2-core machine)")
        started = time.perf_counter()
        settings = DevClusterSettings(port=0, inference_nodes=1, engine=EngineKind.LLAMA)
        async with DevCluster(settings) as cluster:
            print(
                f"start-up, llama cluster (1 inference node): {time.perf_counter() - started:.1f} s"
            )
            model = _plain_client(cluster).models.list().data[0].id
            with tempfile.TemporaryDirectory(prefix="bench-client-") as scratch:
                where = Path(scratch)
                await end_to_end(cluster, model, where, pairs, max_tokens)
                await first_verification(cluster, model, where, clients)
                await cached_verification(cluster, model, where, calls)
        load = os.getloadavg()
        print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    anyio.run(main, backend="trio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--clients", type=int, default=7, help="fresh clients per trust state")
    parser.add_argument("--calls", type=int, default=20000, help="cached verification calls")
    parser.add_argument("--quick", action="store_true", help="3 pairs, 64 tokens, 3 clients")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.max_tokens, args.clients, args.calls = 3, 64, 3, 5000
    run(args.pairs, args.max_tokens, args.clients, args.calls)


if __name__ == "__main__":
    main()
