"""A running ingress for tests: the real app under the real hypercorn TLS
server, over a dispatcher that drives the real ``InferenceActor`` on
``ScriptedEngine``, in a thread of its own (the official ``openai`` SDK is
synchronous).

``ActorDispatcher`` is the test-side Dispatcher: each submission runs
``InferenceActor.generate`` in the server's nursery and relays its replies
through a memory channel; ``aclose`` cancels generation (the scheduler does
this over a node link in a cluster). Knobs make it answer ``Overloaded`` or
``NoCapacity``, or fail a stream after some chunks, as a scheduler would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import queue
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import anyio.to_thread
import httpx2
import trio
from openai import OpenAI

from actors.inference import Generate, InferenceActor, Reply
from actors.ingress import AttestationSource, IngressLimits, Tenant, TenantStore, create_app
from actors.log import configure_logging
from actors.scheduler import ModelListing, NoCapacity, Overloaded, UnknownModel
from actors.seams.engine import CancelToken
from nodes.clock import TrioClock
from nodes.https import HttpsEndpoint, HttpsLimits, generate_tls_identity, serve_https
from nodes.random import SystemRandom
from protocol.inference import GenerateChunk, GenerateRequest
from protocol.messages import ErrorCode, ErrorReply
from simulations.engine import ScriptedEngine

MODEL = "scripted-model"
API_KEY = "mk-test-tenant-a-0123456789abcdef"
OTHER_KEY = "mk-test-tenant-b-fedcba9876543210"


class ActorSubmission:
    """One request running on the inference actor; replies through a channel."""

    def __init__(self, receive: trio.MemoryReceiveChannel[Reply], cancel: CancelToken) -> None:
        self._receive = receive
        self._cancel = cancel
        self.scope = trio.CancelScope()
        self.closed = trio.Event()
        self.replies = 0

    async def __aiter__(self) -> AsyncIterator[Reply]:
        async for reply in self._receive:
            self.replies += 1
            yield reply
            if not isinstance(reply, GenerateChunk):
                return

    async def aclose(self) -> None:
        self._cancel.cancel()
        self.scope.cancel()
        await self._receive.aclose()
        self.closed.set()


@dataclasses.dataclass
class ActorDispatcher:
    """A Dispatcher over one real ``InferenceActor`` (knobs for the scheduler's answers)."""

    actor: InferenceActor
    nursery: trio.Nursery
    models_served: tuple[str, ...] = (MODEL,)
    overloaded_retry_after: float | None = None
    no_capacity: bool = False
    #: After this many chunks, the stream ends with ErrorReply(INTERNAL).
    fail_after_chunks: int | None = None
    #: After this many chunks, the node goes silent (a stalled request).
    stall_after_chunks: int | None = None
    submissions: list[ActorSubmission] = dataclasses.field(default_factory=list)
    tenants_seen: list[str] = dataclasses.field(default_factory=list)

    def models(self) -> Sequence[ModelListing]:
        return [ModelListing(model, 1) for model in self.models_served]

    async def submit(
        self, request: GenerateRequest, *, tenant: str, deadline: float
    ) -> ActorSubmission:
        if request.model not in self.models_served:
            raise UnknownModel()
        if self.overloaded_retry_after is not None:
            raise Overloaded(self.overloaded_retry_after)
        if self.no_capacity:
            raise NoCapacity()
        self.tenants_seen.append(tenant)
        send, receive = trio.open_memory_channel[Reply](64)
        cancel = CancelToken()
        submission = ActorSubmission(receive, cancel)
        fail_after, stall_after = self.fail_after_chunks, self.stall_after_chunks

        async def run() -> None:
            sent = 0

            async def reply(message: Reply) -> None:
                nonlocal sent
                if fail_after is not None and sent == fail_after:
                    await send.send(ErrorReply(ErrorCode.INTERNAL, True))
                    raise trio.ClosedResourceError
                if stall_after is not None and sent == stall_after:
                    await trio.sleep_forever()
                sent += 1
                await send.send(message)

            with submission.scope:
                async with send:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self.actor.generate(Generate(request, reply, cancel))

        self.nursery.start_soon(run)
        self.submissions.append(submission)
        return submission


def tenants() -> TenantStore:
    return TenantStore(
        [
            Tenant("tenant-a", hashlib.sha256(API_KEY.encode()).digest()),
            Tenant("tenant-b", hashlib.sha256(OTHER_KEY.encode()).digest()),
        ]
    )


@dataclasses.dataclass
class RunningIngress:
    endpoint: HttpsEndpoint
    cert_path: Path
    dispatcher: ActorDispatcher
    logs: io.StringIO
    attestation_nonces: list[bytes]
    trio_token: trio.lowlevel.TrioToken

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.endpoint.port}"

    def http(self, **kwargs: object) -> httpx2.Client:
        return httpx2.Client(verify=self.tls_context(), base_url=self.base_url, **kwargs)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def tls_socket(self, timeout: float = 10.0) -> Iterator[ssl.SSLSocket]:
        """A raw TLS connection to the server, for hand-written HTTP."""
        raw = socket.create_connection(("127.0.0.1", self.endpoint.port), timeout=timeout)
        with raw, self.tls_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            yield tls

    def tls_context(self) -> ssl.SSLContext:
        """Trusts exactly this server's certificate."""
        return ssl.create_default_context(cafile=str(self.cert_path))

    def client(self, api_key: str = API_KEY, **kwargs: object) -> OpenAI:
        return OpenAI(
            api_key=api_key,
            base_url=self.base_url + "/v1",
            http_client=httpx2.Client(verify=self.tls_context()),
            **kwargs,  # type: ignore[arg-type]
        )

    def call(self, fn: object, *args: object) -> object:
        """Run ``fn`` in the server's trio thread (to read its state safely)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self.trio_token)  # type: ignore[arg-type]


async def _document(nonce: bytes) -> bytes:
    """A stand-in attestation source: the real one is the node's TPM, which
    the daemon wires; this returns bytes derived from the nonce so the test
    can tell the nonce reached it."""
    return b"document-over:" + nonce


@dataclasses.dataclass
class _Ct:
    """A tiny ASGI app standing where the transparency log's sub-app goes."""

    async def __call__(self, scope: object, receive: object, send: object) -> None:
        assert isinstance(scope, dict)
        payload = b'{"ct":true}'
        await send(  # type: ignore[operator]
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})  # type: ignore[operator]


@dataclasses.dataclass
class _ServerThread:
    started: queue.Queue[RunningIngress | BaseException]
    tmp: Path
    limits: IngressLimits
    attestation: AttestationSource | None = None
    https_limits: HttpsLimits | None = None
    stop: trio.Event | None = None

    def run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # surfaced to the fixture
            self.started.put(exc)

    async def _main(self) -> None:
        logs = io.StringIO()
        configure_logging(logs, level="debug")
        self.stop = trio.Event()
        identity = generate_tls_identity()
        nonces: list[bytes] = []

        async def attestation(nonce: bytes) -> bytes:
            nonces.append(nonce)
            if self.attestation is not None:
                return await self.attestation(nonce)
            return await _document(nonce)

        async with trio.open_nursery() as nursery:
            dispatcher = ActorDispatcher(
                InferenceActor(ScriptedEngine(MODEL), anyio.to_thread.run_sync), nursery
            )
            app = create_app(
                dispatcher=dispatcher,
                tenants=tenants(),
                attestation=attestation,
                tls_spki_der=identity.spki_der,
                tlog_app=_Ct(),
                clock=TrioClock(),
                random=SystemRandom(),
                limits=self.limits,
            )
            cert_path = self.tmp / "ingress-cert.pem"
            endpoint = await nursery.start(
                lambda task_status: serve_https(
                    app,
                    identity=identity,
                    cert_path=cert_path,
                    shutdown_trigger=self.stop.wait,  # type: ignore[union-attr]
                    limits=self.https_limits,
                    task_status=task_status,
                )
            )
            self.started.put(
                RunningIngress(
                    endpoint,
                    cert_path,
                    dispatcher,
                    logs,
                    nonces,
                    trio.lowlevel.current_trio_token(),
                )
            )
            await self.stop.wait()
            nursery.cancel_scope.cancel()


@dataclasses.dataclass
class IngressServer:
    thread: threading.Thread
    runner: _ServerThread
    running: RunningIngress

    def close(self) -> None:
        stop = self.runner.stop
        if stop is not None:
            trio.from_thread.run_sync(stop.set, trio_token=self.running.trio_token)
        self.thread.join(timeout=15)


def start_ingress(
    tmp: Path,
    limits: IngressLimits | None = None,
    attestation: AttestationSource | None = None,
    https_limits: HttpsLimits | None = None,
) -> IngressServer:
    started: queue.Queue[RunningIngress | BaseException] = queue.Queue()
    runner = _ServerThread(started, tmp, limits or IngressLimits(), attestation, https_limits)
    thread = threading.Thread(target=runner.run, name="ingress-test-server", daemon=True)
    thread.start()
    result = started.get(timeout=30)
    if isinstance(result, BaseException):
        raise result
    return IngressServer(thread, runner, result)


def running_ingress(
    tmp: Path,
    limits: IngressLimits | None = None,
    attestation: AttestationSource | None = None,
    https_limits: HttpsLimits | None = None,
) -> Iterator[RunningIngress]:
    """Fixture body: a server for the duration of the fixture."""
    server = start_ingress(tmp, limits, attestation, https_limits)
    try:
        yield server.running
    finally:
        server.close()
