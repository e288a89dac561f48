"""``mantle.Client`` and ``mantle.AsyncClient`` against the real development
cluster (a keys node, an ingress node and two inference nodes, each a
``mantle-node run`` process on a simulated NitroTPM, serving the paced
scripted engine), on asyncio and on trio: chat completions and responses,
whole and streamed, each with a receipt whose key is the serving node's
verified receipt key; a stream closed early frees its node; the SDK bridge
(``mantle.openai_client``) on the attested TLS key. Every byte the ingress
exchanged with the client is recorded at the client's transport: the canary
prompt and its completion are in none of them, nor in any file under the
cluster's data dir. The ``static_key`` of ``/v1/mantle/nodes`` entries is
what the client seals to, and only once the document binds it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

import mantle
from mantle import ATTESTATION_ROOT_PIN, LOG_KEY_PIN, RELEASE_ROOT_PIN, pinned_tls_context
from nodes.devcluster import INGRESS_NODE, DevCluster, DevClusterSettings, EngineKind
from protocol.e2e import Receipt, receipt_key_binding

START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 60.0
MODEL = "scripted"
CANARY = "CANARY-client-e2e-7d41 the orchard's buried key"
#: The scripted engine's pace: a long answer runs for minutes.
TOKEN_INTERVAL_S = 0.05
LONG_TOKENS = 4000  # 200 s at the pace above
BACKENDS = ["asyncio", "trio"]


@dataclass
class Recorded:
    """Every byte the client sent to the ingress and received from it."""

    sent: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)

    def holds(self, secret: bytes) -> bool:
        return any(secret in chunk for chunk in (*self.sent, *self.received))


class _RecordingStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, into: list[bytes]) -> None:
        self._inner = inner
        self._into = into

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._into.append(bytes(chunk))
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class RecordingTransport(httpx2.AsyncBaseTransport):
    """The real network (TLS pinned to the cluster's certificate), keeping a
    copy of each request body and response byte: what the ingress saw."""

    def __init__(self, tls_cert: Path, recorded: Recorded) -> None:
        self._inner = httpx2.AsyncHTTPTransport(verify=pinned_tls_context(tls_cert.read_bytes()))
        self._recorded = recorded

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self._recorded.sent.append(request.url.raw_path + b"\n" + await request.aread())
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_RecordingStream(response.stream, self._recorded.received),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class StaticKeySwap(RecordingTransport):
    """An ingress that hands out the second node's static key for the first
    node's document (so a client sealing to it would reach another node)."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        if request.url.path != "/v1/mantle/nodes" or response.status_code != 200:
            return response
        listing = json.loads(await response.aread())
        first, second = listing["nodes"][:2]
        first["static_key"] = second["static_key"]
        return httpx2.Response(
            200,
            headers={"content-type": "application/json"},
            stream=httpx2.ByteStream(json.dumps(listing).encode()),
        )


@dataclass
class Running:
    cluster: DevCluster
    work: Path
    recorded: Recorded = field(default_factory=Recorded)
    states: int = 0

    @property
    def pins(self) -> Path:
        return self.cluster.attestation_root.parent

    def options(self, transport: httpx2.AsyncBaseTransport | None = None) -> dict[str, Any]:
        self.states += 1
        return {
            "url": self.cluster.url,
            "api_key": self.cluster.api_key,
            "attestation_root": self.pins / ATTESTATION_ROOT_PIN,
            "release_root": self.pins / RELEASE_ROOT_PIN,
            "tlog_key": self.pins / LOG_KEY_PIN,
            "tls_cert": self.cluster.tls_cert,
            "trust_state": self.work / f"trust-{self.states}.json",
            "transport": transport
            if transport is not None
            else RecordingTransport(self.cluster.tls_cert, self.recorded),
        }

    def receipt_bindings(self, verified: mantle.VerifiedNodes) -> set[bytes]:
        return {node.receipt_key_binding for node in verified.nodes}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    work = tmp_path_factory.mktemp("client-e2e")
    settings = DevClusterSettings(
        data_dir=work / "dev",
        port=0,
        inference_nodes=2,
        engine=EngineKind.SCRIPTED,
        token_interval_s=TOKEN_INTERVAL_S,
        startup_timeout_s=START_TIMEOUT_S,
    )
    cluster = DevCluster(settings)
    started = time.monotonic()
    try:
        anyio.run(cluster.start, backend="trio")
        assert time.monotonic() - started < START_TIMEOUT_S
        yield Running(cluster, work)
    finally:
        anyio.run(cluster.stop, backend="trio")


USER = [{"role": "user", "content": CANARY}]


def _check_receipt(receipt: Receipt | None, verified: mantle.VerifiedNodes) -> None:
    """The receipt is the serving node's: its key bound by exactly one of the
    verified documents, naming the release's model digest and version."""
    assert isinstance(receipt, Receipt)
    node = verified.node_for_receipt_binding(receipt_key_binding(receipt.receipt_key))
    assert node is not None
    bindings = [n.receipt_key_binding for n in verified.nodes]
    assert bindings.count(node.receipt_key_binding) == 1
    assert receipt.model == MODEL
    assert receipt.release_version == verified.release.version


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_async_client_chats_and_answers_responses(running: Running, backend: str) -> None:
    texts: list[str] = []

    async def main() -> None:
        async with mantle.AsyncClient(**running.options()) as client:
            verified = await client.verify(MODEL)
            assert len(verified.nodes) == 2 and not verified.refused
            whole = await client.chat.completions.create(model=MODEL, messages=USER, max_tokens=6)
            assert whole.choices[0].finish_reason == "length"
            assert whole.usage is not None and whole.usage.completion_tokens == 6
            texts.append(whole.choices[0].message.content or "")
            _check_receipt(whole.receipt, verified)

            stream = await client.chat.completions.create(
                model=MODEL, messages=USER, max_tokens=5, stream=True
            )
            streamed = ""
            async with stream:
                async for chunk in stream:
                    if chunk.choices:
                        streamed += chunk.choices[0].delta.content or ""
            assert streamed
            texts.append(streamed)
            _check_receipt(stream.receipt, verified)
            assert stream.saved_receipt is not None

            answer = await client.responses.create(model=MODEL, input=CANARY, max_output_tokens=4)
            assert answer.output_text
            texts.append(answer.output_text)
            _check_receipt(answer.receipt, verified)

            events = await client.responses.create(
                model=MODEL, input=CANARY, max_output_tokens=4, stream=True
            )
            kinds = []
            async with events:
                async for event in events:
                    kinds.append(event.type)
            assert kinds[0] == "response.created" and kinds[-1] in (
                "response.completed",
                "response.incomplete",
            )
            _check_receipt(events.receipt, verified)

    anyio.run(main, backend=backend)
    assert all(texts)
    for secret in (CANARY, *texts):
        assert not running.recorded.holds(secret.encode())


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_blocking_client_chats_and_streams(running: Running, backend: str) -> None:
    with mantle.Client(**running.options(), backend=backend) as client:
        verified = client.verify(MODEL)
        whole = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=4)
        text = whole.choices[0].message.content or ""
        assert text
        _check_receipt(whole.receipt, verified)
        with client.responses.create(
            model=MODEL, input=CANARY, max_output_tokens=3, stream=True
        ) as events:
            kinds = [event.type for event in events]
        assert "response.output_text.delta" in kinds
        _check_receipt(events.receipt, verified)
    assert not running.recorded.holds(CANARY.encode())
    assert not running.recorded.holds(text.encode())


@pytest.mark.parametrize("backend", BACKENDS)
def test_closing_a_stream_early_frees_the_node(running: Running, backend: str) -> None:
    """Both nodes' one slot taken by answers of 200 s; both closed after their
    first chunks. Were the nodes still generating, a new request would wait
    minutes for a slot; it is answered at once."""

    async def main() -> None:
        async with mantle.AsyncClient(**running.options()) as client:
            streams = [
                await client.chat.completions.create(
                    model=MODEL, messages=USER, max_tokens=LONG_TOKENS, stream=True
                )
                for _ in range(2)
            ]
            for stream in streams:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        break
                await stream.aclose()
                assert stream.receipt is None
            started = time.monotonic()
            after = await client.chat.completions.create(model=MODEL, messages=USER, max_tokens=3)
            assert after.choices[0].finish_reason == "length"
            assert time.monotonic() - started < 30.0

    anyio.run(main, backend=backend)
    # The ingress ended each closed stream's request long before its answer
    # would have (a generous bound far under the 200 s it would run).
    durations = [
        line["duration_ms"]
        for line in _ingress_log_lines(running)
        if line.get("event") == "http_request" and line.get("path") == "/v1/mantle/chat"
    ]
    assert durations and max(durations) < 60_000


def _ingress_log_lines(running: Running) -> list[dict[str, Any]]:
    lines = []
    for log in running.cluster.layout.node_dir(INGRESS_NODE).glob("*.log"):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                lines.append(parsed)
    return lines


def test_the_client_seals_to_the_static_key_the_document_binds(running: Running) -> None:
    """Entries carry ``static_key``; the client keeps a node only if its
    document binds that key, and seals to that key (so the request opens)."""
    listing = httpx2.get(
        f"{running.cluster.url}/v1/mantle/nodes?model={MODEL}&nonce={'11' * 32}",
        headers={"authorization": f"Bearer {running.cluster.api_key}"},
        verify=pinned_tls_context(running.cluster.tls_cert.read_bytes()),
    ).json()
    served = {base64.b64decode(entry["static_key"]) for entry in listing["nodes"]}
    assert len(served) == 2

    async def main() -> None:
        async with mantle.AsyncClient(**running.options()) as client:
            verified = await client.verify(MODEL)
            assert {node.static_key for node in verified.nodes} == served
        swapped = StaticKeySwap(running.cluster.tls_cert, Recorded())
        async with mantle.AsyncClient(**running.options(swapped)) as client:
            verified = await client.verify(MODEL)
            # The first document binds its own key, not the second's: left out.
            assert len(verified.nodes) == 1 and len(verified.refused) == 1
            assert verified.refused[0][1] == "bound_key"
            out = await client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
            _check_receipt(out.receipt, verified)

    anyio.run(main, backend="trio")


def test_the_sdk_bridge_talks_to_the_attested_ingress(running: Running) -> None:
    options = running.options()
    options.pop("transport")
    client = mantle.openai_client(**options, max_retries=0, timeout=REQUEST_TIMEOUT_S)
    with client:
        (model,) = client.models.list()
        assert model.id == MODEL
        out = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=3)  # type: ignore[arg-type]
        assert out.choices[0].finish_reason == "length"


def test_no_file_the_cluster_wrote_holds_the_canary(running: Running) -> None:
    """Runs last: every file under the data dir (ingress logs and state
    included). The SDK bridge's plaintext path is in the ingress's memory,
    never in what it writes."""
    assert any(line.get("path") == "/v1/mantle/chat" for line in _ingress_log_lines(running)), (
        "the ingress never logged a sealed request"
    )
    for path in Path(running.cluster.data_dir).rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
