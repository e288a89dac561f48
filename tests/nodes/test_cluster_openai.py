"""The whole cluster as a user runs it: ``nodes.devcluster.DevCluster`` (a keys
node, an ingress node and two inference nodes, each a ``mantle-node run``
process on a simulated NitroTPM) and the official ``openai`` SDK over TLS,
trusting only the certificate the ingress wrote.

The first cluster serves the demo model on llama.cpp (weights sealed, their
data key released by the attested keys node): the models list, chat
completions and responses (whole and streamed), stop sequences,
``max_tokens`` ending ``length``, usage (also ``stream_options``), and the
refusals (404 unknown model, 401 bad key, 413 oversized body, 400 naming an
unsupported parameter). The second serves the scripted engine at a steady
pace with a small queue: a full queue answers 429 with ``Retry-After``,
hostile HTTP gets clear answers while the ingress keeps serving, and an
inference node killed mid-request ends the stream it ran with an error event
while the requests it had not started complete on the other node. Nothing may
hang: every wait has a generous bound.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import openai
import pytest

from nodes.devcluster import DEMO_MODEL_ID, DevCluster, DevClusterSettings, EngineKind

#: Generous bounds: the machine is shared; these catch hangs, not slowness.
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 60.0
#: The scripted engine's pace: a 100-token answer takes some 5 s.
TOKEN_INTERVAL_S = 0.05
LONG_TOKENS = 100
QUEUE_LIMIT = 2
CANARY = "CANARY-cluster-7e31 name three rivers"
USER = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@dataclass
class RunningCluster:
    cluster: DevCluster
    model: str

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cluster.tls_cert))

    def client(self, api_key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.cluster.url + "/v1",
            api_key=api_key if api_key is not None else self.cluster.api_key,
            http_client=httpx2.Client(verify=self.tls_context(), timeout=REQUEST_TIMEOUT_S),
            max_retries=0,
        )

    @property
    def port(self) -> int:
        return int(self.cluster.url.rsplit(":", 1)[1])


def _running(settings: DevClusterSettings, model: str) -> Iterator[RunningCluster]:
    cluster = DevCluster(settings)
    started = time.monotonic()
    try:
        anyio.run(cluster.start, backend="trio")
        assert time.monotonic() - started < START_TIMEOUT_S
        yield RunningCluster(cluster, model)
    finally:
        anyio.run(cluster.stop, backend="trio")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    settings = DevClusterSettings(
        data_dir=tmp_path_factory.mktemp("llama-cluster") / "dev",
        port=0,
        inference_nodes=2,
        engine=EngineKind.LLAMA,
        startup_timeout_s=START_TIMEOUT_S,
    )
    yield from _running(settings, DEMO_MODEL_ID)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    settings = DevClusterSettings(
        data_dir=tmp_path_factory.mktemp("scripted-cluster") / "dev",
        port=0,
        inference_nodes=2,
        engine=EngineKind.SCRIPTED,
        token_interval_s=TOKEN_INTERVAL_S,
        max_queued=QUEUE_LIMIT,
        max_queued_per_tenant=QUEUE_LIMIT,
        startup_timeout_s=START_TIMEOUT_S,
    )
    yield from _running(settings, "scripted")


@pytest.fixture(scope="module")
def llama_client(llama: RunningCluster) -> Iterator[openai.OpenAI]:
    with llama.client() as client:
        yield client


# -- the real model through the SDK -----------------------------------------------------


def test_models_list_names_the_model_on_both_nodes(
    llama: RunningCluster, llama_client: openai.OpenAI
) -> None:
    models = list(llama_client.models.list())
    assert [m.id for m in models] == [DEMO_MODEL_ID]
    assert models[0].model_dump()["nodes"] == 2


def test_chat_completion_with_length_and_usage(llama_client: openai.OpenAI) -> None:
    out = llama_client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=USER,  # type: ignore[arg-type]
        max_tokens=5,
        temperature=0,
    )
    assert out.object == "chat.completion" and out.model == DEMO_MODEL_ID
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].message.role == "assistant" and out.choices[0].message.content
    assert out.usage is not None and out.usage.completion_tokens == 5
    assert out.usage.prompt_tokens > 10  # the question and the chat template
    assert out.usage.total_tokens == out.usage.prompt_tokens + 5


def test_chat_stream_with_include_usage(llama_client: openai.OpenAI) -> None:
    whole = llama_client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=USER,  # type: ignore[arg-type]
        max_tokens=12,
        temperature=0,
    )
    chunks = list(
        llama_client.chat.completions.create(
            model=DEMO_MODEL_ID,
            messages=USER,  # type: ignore[arg-type]
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # Greedy decoding: either node gives the same answer, streamed or not.
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == whole.choices[0].finish_reason and set(finals[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    plain = list(
        llama_client.chat.completions.create(
            model=DEMO_MODEL_ID,
            messages=USER,  # type: ignore[arg-type]
            max_tokens=2,
            stream=True,
        )
    )
    assert all(c.usage is None for c in plain)


def test_stop_sequence_ends_the_answer_before_it(llama_client: openai.OpenAI) -> None:
    whole = llama_client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=USER,  # type: ignore[arg-type]
        max_tokens=24,
        temperature=0,
    )
    text = whole.choices[0].message.content
    assert text is not None
    words = text.split()
    stop = next(w for w in words[2:] if len(w) >= 3)
    out = llama_client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=USER,  # type: ignore[arg-type]
        max_tokens=24,
        temperature=0,
        stop=[stop],
    )
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.content == text[: text.index(stop)]


def test_responses_whole_and_streamed(llama_client: openai.OpenAI) -> None:
    whole = llama_client.responses.create(
        model=DEMO_MODEL_ID, input="Name a colour.", max_output_tokens=4, temperature=0
    )
    assert whole.object == "response" and whole.status == "incomplete"
    assert whole.incomplete_details is not None
    assert whole.incomplete_details.reason == "max_output_tokens"
    assert whole.usage is not None and whole.usage.output_tokens == 4
    assert whole.output_text

    events = list(
        llama_client.responses.create(
            model=DEMO_MODEL_ID,
            input=[{"role": "user", "content": "Name a colour."}],
            instructions="Answer with one word.",
            max_output_tokens=16,
            temperature=0,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert deltas and deltas == done.text
    final = events[-1].response  # type: ignore[union-attr]
    assert final.usage is not None and final.output_text == deltas


def test_unknown_model_is_404(llama_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        llama_client.chat.completions.create(model="no-such-model", messages=USER)  # type: ignore[arg-type]
    assert caught.value.status_code == 404


def test_bad_api_key_is_401(llama: RunningCluster) -> None:
    with llama.client(api_key="sk-mantle-" + "0" * 48) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model=DEMO_MODEL_ID, messages=USER)  # type: ignore[arg-type]


def test_oversized_body_is_413_and_the_client_keeps_working(llama_client: openai.OpenAI) -> None:
    big = "x" * (1024 * 1024 + 1000)
    with pytest.raises(openai.APIStatusError) as caught:
        llama_client.chat.completions.create(
            model=DEMO_MODEL_ID, messages=[{"role": "user", "content": big}]
        )
    assert caught.value.status_code == 413
    assert llama_client.models.list().data


def test_unsupported_parameter_is_400_naming_it(llama_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        llama_client.chat.completions.create(
            model=DEMO_MODEL_ID,
            messages=USER,  # type: ignore[arg-type]
            logit_bias={"1": 2},
        )
    assert caught.value.param == "logit_bias"
    assert "logit_bias" in caught.value.message


# -- the scripted cluster: limits, hostile HTTP, a node lost ----------------------------


class _Stream:
    """A streamed chat completion read in a thread: ``started`` is set once a
    content chunk arrived (the request is running on a node)."""

    def __init__(self, client: openai.OpenAI, model: str, max_tokens: int) -> None:
        import threading

        self.started = threading.Event()
        self.release = threading.Event()
        self._client = client
        self._model = model
        self._max_tokens = max_tokens
        self.text = ""
        self.finish: str | None = None

    def run(self, *, stop_early: bool = False) -> str | None:
        stream = self._client.chat.completions.create(
            model=self._model,
            messages=[{"role": "user", "content": CANARY}],
            max_tokens=self._max_tokens,
            stream=True,
        )
        with stream:
            for chunk in stream:
                if not chunk.choices:
                    continue
                self.text += chunk.choices[0].delta.content or ""
                if self.text and not self.started.is_set():
                    self.started.set()
                    if stop_early:
                        assert self.release.wait(REQUEST_TIMEOUT_S)
                        return None  # leaving closes the submission (cancelled on its node)
                self.finish = chunk.choices[0].finish_reason or self.finish
        return self.finish


def _short_completion(client: openai.OpenAI, model: str) -> str | None:
    out = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": CANARY}],
        max_tokens=3,
    )
    return out.choices[0].finish_reason


def test_scripted_cluster_serves_both_nodes(scripted: RunningCluster) -> None:
    with scripted.client() as client:
        (model,) = client.models.list()
        assert model.id == "scripted" and model.model_dump()["nodes"] == 2
        assert _short_completion(client, "scripted") == "length"


def test_queue_full_is_429_with_retry_after(scripted: RunningCluster) -> None:
    with (
        scripted.client() as client,
        concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool,
    ):
        # Both nodes' one slot busy, for some 5 s each.
        streams = [_Stream(client, "scripted", LONG_TOKENS) for _ in range(2)]
        running = [pool.submit(s.run, stop_early=True) for s in streams]
        for stream in streams:
            assert stream.started.wait(REQUEST_TIMEOUT_S)
        # Twice the queue's room: whatever the order they arrive in, two wait
        # in the queue and two are refused at once.
        waiting = [
            pool.submit(_short_completion, client, "scripted") for _ in range(2 * QUEUE_LIMIT)
        ]
        refused: list[openai.RateLimitError] = []
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while len(refused) < QUEUE_LIMIT and time.monotonic() < deadline:
            done, _ = concurrent.futures.wait(waiting, timeout=1.0)
            refused = [
                f.exception()  # type: ignore[misc]
                for f in done
                if isinstance(f.exception(), openai.RateLimitError)
            ]
        assert len(refused) == QUEUE_LIMIT
        for error in refused:
            assert error.status_code == 429
            assert float(error.response.headers["retry-after"]) > 0
        # The streams leave; the queued requests get the slots and complete.
        for stream in streams:
            stream.release.set()
        for future in running:
            assert future.result(timeout=REQUEST_TIMEOUT_S) is None
        results = [f for f in waiting if not isinstance(f.exception(), openai.RateLimitError)]
        assert [f.result(timeout=REQUEST_TIMEOUT_S) for f in results] == ["length"] * QUEUE_LIMIT


def _tls(port: int, context: ssl.SSLContext, timeout: float = 30.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _exchange(port: int, context: ssl.SSLContext, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes or one response is complete."""
    with _tls(port, context) as tls:
        # The server may answer and close before reading it all: read the answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            tls.sendall(request)
        return _read_response(tls)


def _read_response(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while True:
        try:
            chunk = tls.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")[1:]
                if line.lower().startswith(b"content-length:")
            ]
            if length and len(body) >= length[0]:
                break
    return data


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:80]
    return int(response.split(b" ", 2)[1])


def _post(key: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _slow_body(port: int, context: ssl.SSLContext, key: str) -> bytes:
    """A body that promises 200 bytes and sends 10, then nothing."""
    with _tls(port, context, timeout=60.0) as tls:
        tls.sendall(_post(key, b"x" * 200)[:-190])
        return _read_response(tls)


def test_hostile_http_gets_clear_answers_and_the_ingress_keeps_serving(
    scripted: RunningCluster,
) -> None:
    port, context, key = scripted.port, scripted.tls_context(), scripted.cluster.api_key
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(_slow_body, port, context, key)

        malformed = _exchange(port, context, _post(key, b'{"model": "scripted", "messages": ['))
        assert _status(malformed) == 400 and b'"error"' in malformed

        wrong_type = _exchange(port, context, _post(key, b"model=scripted", b"text/plain"))
        assert _status(wrong_type) == 415

        huge = (
            b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"
            b"X-Filler: " + b"a" * (64 * 1024) + b"\r\n\r\n"
        )
        assert _status(_exchange(port, context, huge)) in (400, 431)

        many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
        crowded = (
            b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n" + many + b"\r\n"
        )
        assert _status(_exchange(port, context, crowded)) == 431

        garbage = _exchange(port, context, b"\x00\xff not http at all\r\n\r\n")
        assert garbage == b"" or _status(garbage) == 400

        # Plain text on the TLS port: the handshake fails, nothing else.
        with socket.create_connection(("127.0.0.1", port), timeout=30.0) as plain:
            plain.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = plain.recv(4096)
            except ConnectionResetError:
                answer = b""
            assert answer == b"" or answer[0] == 0x15  # closed, or a TLS alert record

        assert _status(slow.result(timeout=REQUEST_TIMEOUT_S)) == 408

    with scripted.client() as client:
        assert _short_completion(client, "scripted") == "length"
        assert [m.id for m in client.models.list()] == ["scripted"]


def test_a_node_killed_mid_request(scripted: RunningCluster) -> None:
    """Runs last on the scripted cluster: it leaves one inference node."""
    with (
        scripted.client() as client,
        concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool,
    ):
        streams = [_Stream(client, "scripted", LONG_TOKENS) for _ in range(2)]
        running = [pool.submit(s.run) for s in streams]
        for stream in streams:
            assert stream.started.wait(REQUEST_TIMEOUT_S)
        # Both slots are busy: these wait in the scheduler's queue.
        queued = [pool.submit(_short_completion, client, "scripted") for _ in range(QUEUE_LIMIT)]
        time.sleep(0.5)
        (victim,) = [n for n in scripted.cluster.nodes if n.name == "inference-1"]
        os.kill(victim.pid, signal.SIGKILL)

        outcomes = concurrent.futures.wait(running, timeout=REQUEST_TIMEOUT_S)
        assert not outcomes.not_done, "a stream hangs after its node was killed"
        errors = [f.exception() for f in running if f.exception() is not None]
        finished = [f.result() for f in running if f.exception() is None]
        # The stream on the killed node ends with an error event the SDK raises;
        # the other one runs to its end.
        assert len(errors) == 1 and finished == ["length"], (errors, finished)
        assert isinstance(errors[0], openai.APIError)
        assert not isinstance(errors[0], openai.APIConnectionError)
        # The requests no node had started complete on the surviving node.
        assert [f.result(timeout=REQUEST_TIMEOUT_S) for f in queued] == ["length"] * QUEUE_LIMIT

        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while client.models.list().data[0].model_dump()["nodes"] != 1:
            assert time.monotonic() < deadline, "the killed node is still listed"
            time.sleep(0.2)
        assert _short_completion(client, "scripted") == "length"


def test_data_dirs_hold_no_canary(scripted: RunningCluster) -> None:
    """What the nodes wrote (logs, console output, state) never holds a prompt."""
    for path in Path(scripted.cluster.data_dir).rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
