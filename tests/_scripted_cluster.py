"""A running dev cluster on the scripted engine, for the attacks that need the
whole cluster as a user runs it (separate ``mantle-node run`` processes, the
official ``openai`` SDK over the TLS certificate the ingress wrote).

:func:`scripted_cluster` starts one for a test module (some 5 s) and stops it
afterwards; :class:`ScriptedCluster` hands out SDK clients, the node processes
by name and streaming helpers whose every wait has a generous bound.
"""

from __future__ import annotations

import dataclasses
import signal
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx2
import openai

from nodes.devcluster import DevCluster, DevClusterSettings, EngineKind

#: Bounds that catch hangs, not slowness (the machine is shared).
REQUEST_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 60.0
TOKEN_INTERVAL_S = 0.05


@dataclasses.dataclass
class StreamOutcome:
    """How one streamed chat completion ended."""

    chunks: int = 0
    finish_reason: str | None = None
    error: BaseException | None = None
    first_chunk: threading.Event = dataclasses.field(default_factory=threading.Event)
    ended: threading.Event = dataclasses.field(default_factory=threading.Event)


@dataclasses.dataclass
class ScriptedCluster:
    cluster: DevCluster
    model: str

    def client(self) -> openai.OpenAI:
        context = ssl.create_default_context(cafile=str(self.cluster.tls_cert))
        return openai.OpenAI(
            base_url=self.cluster.url + "/v1",
            api_key=self.cluster.api_key,
            http_client=httpx2.Client(verify=context, timeout=REQUEST_TIMEOUT_S),
            max_retries=0,
        )

    def process(self, name: str) -> subprocess.Popen[bytes]:
        (node,) = [node for node in self.cluster.nodes if node.name == name]
        return node.process

    def terminate(self, name: str) -> subprocess.Popen[bytes]:
        process = self.process(name)
        process.send_signal(signal.SIGTERM)
        return process

    def stream(self, max_tokens: int) -> tuple[threading.Thread, StreamOutcome]:
        """A streamed completion of ``max_tokens`` tokens, read in a thread."""
        outcome = StreamOutcome()

        def read() -> None:
            try:
                stream = self.client().chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": "name three rivers"}],
                    max_tokens=max_tokens,
                    stream=True,
                )
                for chunk in stream:
                    for choice in chunk.choices:
                        if choice.delta.content:
                            outcome.chunks += 1
                            outcome.first_chunk.set()
                        outcome.finish_reason = choice.finish_reason or outcome.finish_reason
            except Exception as error:  # the outcome the test judges
                outcome.error = error
            finally:
                outcome.first_chunk.set()
                outcome.ended.set()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread, outcome


@contextmanager
def scripted_cluster(data_dir: Path, *, inference_nodes: int) -> Iterator[ScriptedCluster]:
    settings = DevClusterSettings(
        data_dir=data_dir,
        engine=EngineKind.SCRIPTED,
        port=0,
        inference_nodes=inference_nodes,
        slots=1,
        token_interval_s=TOKEN_INTERVAL_S,
        startup_timeout_s=120,
    )
    cluster = DevCluster(settings)
    try:
        anyio.run(cluster.start, backend="trio")
        assert cluster.model_id is not None
        yield ScriptedCluster(cluster, cluster.model_id)
    finally:
        anyio.run(cluster.stop, backend="trio")
