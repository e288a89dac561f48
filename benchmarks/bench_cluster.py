"""The serving path against llama-cpp-python called directly, and the path's own overhead.

Run: .venv/bin/python benchmarks/bench_cluster.py [--pairs N] [--max-tokens N] [--quick]

What is measured, all in one run on this machine:

1. **Single stream, the demo model.** A dev cluster (``nodes.devcluster``:
   keys, ingress and one inference node, separate processes, simulated
   NitroTPMs) serves SmolLM2-135M-Instruct. One streamed chat completion at a
   time goes through the official ``openai`` SDK over TLS to the ingress,
   through the scheduler, over the attested Noise link to the inference node
   and back. The baseline is ``llama_cpp.Llama.create_chat_completion(stream=True)``
   in a process of its own (as the node is), on the same GGUF, with the same prompt, ``max_tokens``,
   temperature 0, seed and thread count as the node's engine, measured
   alternately with the cluster (pairs, the order flipping each pair) while
   the cluster is idle. The node evaluates every prompt afresh, so the
   baseline is reset before each call too (llama-cpp-python's reuse of an
   identical prefix is shown on its own line, for information). Reported:
   medians over the pairs of
   * time to first token (request sent -> first content delta), and its
     overhead over the baseline (target <= 10 ms);
   * decode tokens/s: (completion tokens - 1) / (last delta - first delta),
     completion tokens as each side reports them in its usage (target >=
     0.95x the baseline).
2. **Serving overhead alone.** A second cluster on the scripted engine (no
   model: it answers at once): non-streamed chat completions with
   ``max_tokens=8`` from 8 concurrent clients for a few seconds, requests/s
   through TLS -> ingress -> scheduler -> Noise link -> inference actor.
3. **Start-up.** Wall time of each cluster's start (release built and
   logged, every node booted and joined, ``/v1/models`` listing the model).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import httpx2
import openai

from mantle import pinned_tls_context
from nodes.devcluster import DevCluster, DevClusterSettings, EngineKind, demo_model_path

PROMPT = "Write a short paragraph about the sea."


@dataclass(frozen=True)
class Sample:
    ttft_s: float
    decode_tokens_per_s: float
    completion_tokens: int


def _decode_rate(tokens: int, first: float, last: float) -> float:
    if tokens < 2 or last <= first:
        return float("nan")
    return (tokens - 1) / (last - first)


class Direct:
    """llama-cpp-python on the same GGUF (in the worker process, see DirectProcess)."""

    def __init__(self, model: Path) -> None:
        from llama_cpp import Llama

        # The node's engine: n_ctx 2048, one thread per core (nodes/engines/llama.py).
        self._llama = Llama(
            model_path=str(model),
            n_ctx=2048,
            n_threads=max(1, os.cpu_count() or 1),
            verbose=False,
        )

    def run(self, max_tokens: int, *, fresh: bool = True) -> Sample:
        if fresh:
            # The node evaluates every prompt afresh (no KV-cache reuse across
            # requests: one customer's prompt must not shape another's
            # latency), so the baseline does too; llama-cpp-python would
            # otherwise reuse the previous call's identical prefix.
            self._llama.reset()
        start = time.perf_counter()
        first = last = None
        tokens = 0
        stream = self._llama.create_chat_completion(
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=max_tokens,
            temperature=0.0,
            seed=1,
            stream=True,
        )
        for event in stream:  # type: ignore[union-attr]
            delta = event["choices"][0].get("delta", {})  # type: ignore[index]
            if delta.get("content"):
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
                tokens += 1
        assert first is not None and last is not None
        return Sample(first - start, _decode_rate(tokens, first, last), tokens)


class DirectProcess:
    """The baseline in a process of its own, as the inference node is: this
    process runs the SDK client, the cluster's nodes run in theirs, and the
    baseline's llama.cpp threads share the cores on the same terms."""

    def __init__(self) -> None:
        self._child = subprocess.Popen(
            [sys.executable, __file__, "--direct-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._child.stdout is not None
        if self._child.stdout.readline().strip() != "ready":
            raise RuntimeError("the baseline process did not start")

    def run(self, max_tokens: int, *, fresh: bool = True) -> Sample:
        assert self._child.stdin is not None and self._child.stdout is not None
        self._child.stdin.write(json.dumps({"max_tokens": max_tokens, "fresh": fresh}) + "\n")
        self._child.stdin.flush()
        answer = json.loads(self._child.stdout.readline())
        return Sample(answer["ttft_s"], answer["decode_tokens_per_s"], answer["tokens"])

    def close(self) -> None:
        assert self._child.stdin is not None
        self._child.stdin.close()
        self._child.wait(timeout=30)


def direct_worker() -> None:
    direct = Direct(demo_model_path())
    direct.run(8)  # warm-up: the first call pays for allocations
    print("ready", flush=True)
    for line in sys.stdin:
        order = json.loads(line)
        sample = direct.run(order["max_tokens"], fresh=order["fresh"])
        print(
            json.dumps(
                {
                    "ttft_s": sample.ttft_s,
                    "decode_tokens_per_s": sample.decode_tokens_per_s,
                    "tokens": sample.completion_tokens,
                }
            ),
            flush=True,
        )


def through_cluster(client: openai.OpenAI, model: str, max_tokens: int) -> Sample:
    start = time.perf_counter()
    first = last = None
    tokens = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        temperature=0.0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
    assert first is not None and last is not None
    return Sample(first - start, _decode_rate(tokens, first, last), tokens)


def _client(cluster: DevCluster) -> openai.OpenAI:
    http = httpx2.Client(verify=pinned_tls_context(cluster.tls_cert.read_bytes()), timeout=300)
    return openai.OpenAI(base_url=cluster.url + "/v1", api_key=cluster.api_key, http_client=http)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def single_stream(pairs: int, max_tokens: int) -> None:
    direct = DirectProcess()

    async def main() -> None:
        started = time.perf_counter()
        settings = DevClusterSettings(port=0, inference_nodes=1, engine=EngineKind.LLAMA)
        async with DevCluster(settings) as cluster:
            print(
                f"start-up, llama cluster (1 inference node): {time.perf_counter() - started:.1f} s"
            )
            client = _client(cluster)
            model = client.models.list().data[0].id
            await anyio.to_thread.run_sync(lambda: through_cluster(client, model, 8))
            base: list[Sample] = []
            mantle: list[Sample] = []
            for pair in range(pairs):
                order = (0, 1) if pair % 2 == 0 else (1, 0)
                for which in order:
                    if which == 0:
                        base.append(await anyio.to_thread.run_sync(direct.run, max_tokens))
                    else:
                        mantle.append(
                            await anyio.to_thread.run_sync(
                                through_cluster, client, model, max_tokens
                            )
                        )
            cached = [
                await anyio.to_thread.run_sync(lambda: direct.run(max_tokens, fresh=False))
                for _ in range(3)
            ]
            b_ttft = _median([s.ttft_s for s in base])
            m_ttft = _median([s.ttft_s for s in mantle])
            b_rate = _median([s.decode_tokens_per_s for s in base])
            m_rate = _median([s.decode_tokens_per_s for s in mantle])
            print(
                f"single stream, {pairs} pairs, max_tokens {max_tokens} "
                f"(completion tokens: direct {sorted({s.completion_tokens for s in base})}, "
                f"cluster {sorted({s.completion_tokens for s in mantle})})"
            )
            print(
                f"  TTFT   direct {b_ttft * 1000:7.1f} ms   cluster {m_ttft * 1000:7.1f} ms   "
                f"overhead {(m_ttft - b_ttft) * 1000:+.1f} ms (target <= +10 ms)"
            )
            cached_ttft = _median([s.ttft_s for s in cached])
            print(
                f"  (direct with llama-cpp-python's prefix reuse: TTFT {cached_ttft * 1000:.1f} ms)"
            )
            print(
                f"  decode direct {b_rate:7.1f} tok/s cluster {m_rate:7.1f} tok/s "
                f"ratio {m_rate / b_rate:.3f}x (target >= 0.95x)"
            )
            print(
                f"  (for information: direct with llama-cpp's prefix reuse, TTFT "
                f"{_median([s.ttft_s for s in cached]) * 1000:.1f} ms, decode "
                f"{_median([s.decode_tokens_per_s for s in cached]):.1f} tok/s)"
            )

    try:
        anyio.run(main, backend="trio")
    finally:
        direct.close()


def serving_overhead(seconds: float, concurrency: int) -> None:
    async def main() -> None:
        started = time.perf_counter()
        settings = DevClusterSettings(port=0, inference_nodes=1, engine=EngineKind.SCRIPTED)
        async with DevCluster(settings) as cluster:
            print(
                f"start-up, scripted cluster (1 inference node): "
                f"{time.perf_counter() - started:.1f} s"
            )
            client = _client(cluster)
            model = client.models.list().data[0].id
            done = [0]
            lock = threading.Lock()
            stop_at = time.perf_counter() + seconds

            def worker() -> None:
                own = _client(cluster)
                while time.perf_counter() < stop_at:
                    own.chat.completions.create(
                        model=model,
                        messages=[{"role": "user", "content": "hello there"}],
                        max_tokens=8,
                    )
                    with lock:
                        done[0] += 1

            began = time.perf_counter()
            async with anyio.create_task_group() as group:
                for _ in range(concurrency):
                    group.start_soon(anyio.to_thread.run_sync, worker)
            elapsed = time.perf_counter() - began
            print(
                f"serving overhead (scripted engine, {concurrency} clients, max_tokens 8): "
                f"{done[0] / elapsed:.0f} requests/s over {elapsed:.1f} s"
            )

    anyio.run(main, backend="trio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="3 pairs, 64 tokens, 3 s")
    parser.add_argument("--direct-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct_worker:
        direct_worker()
        return
    if args.quick:
        args.pairs, args.max_tokens, args.seconds = 3, 64, 3.0
    single_stream(args.pairs, args.max_tokens)
    serving_overhead(args.seconds, 8)


if __name__ == "__main__":
    main()
