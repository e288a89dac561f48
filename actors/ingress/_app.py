"""The ingress ASGI application: the OpenAI-compatible API over a Dispatcher.

One request's life: route and method, header limits, the tenant's API key
(before any body is read), the content type, the body (bounded in size and
in time), validation (:mod:`protocol.openai`), admission
(:meth:`Dispatcher.submit`), then the replies relayed as they come. The
client going away, or the request outliving its deadline, closes the
submission (which cancels it on the node). Nothing of a request reaches a
log line: events carry the route, the status, the tenant and timings.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Protocol, TypeAlias

import anyio

from actors.ingress._tenants import MAX_API_KEY_BYTES, TenantStore
from actors.log import exception_summary, get_logger
from actors.scheduler import (
    Dispatcher,
    NoCapacity,
    Overloaded,
    Replayed,
    SealedRecord,
    Submission,
    UnknownModel,
)
from actors.seams.clock import Clock
from actors.seams.random import Random
from protocol.attestation import tls_key_binding
from protocol.customer_data import CustomerData
from protocol.e2e import MAX_SEALED_REQUEST_BYTES, E2EError, SealedRequest
from protocol.e2e_stream import (
    SEALED_REQUEST_MEDIA_TYPE,
    STREAM_MEDIA_TYPE,
    error_frame,
    record_frame,
)
from protocol.inference import FinishReason, GenerateChunk, GenerateDone, GenerateRequest
from protocol.messages import ErrorCode, ErrorReply
from protocol.openai import (
    ApiLimits,
    ChatStreamRenderer,
    OpenAIRequestError,
    RequestCheck,
    ResponseRenderer,
    ResponsesRequest,
    Usage,
    parse_chat_request,
    parse_responses_request,
    render_chat_completion,
    render_error,
    render_model_list,
)

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
#: This node's attestation document over a nonce, whose ``user_data`` is
#: :func:`protocol.attestation.tls_key_binding` of the TLS key.
AttestationSource: TypeAlias = Callable[[bytes], Awaitable[bytes]]

CT_PREFIX: Final = "/ct/v1/"
MIN_NONCE_BYTES: Final = 32
MAX_NONCE_BYTES: Final = 64
#: Longest model id in a query (the wire's bound).
MAX_MODEL_QUERY_LEN: Final = 128
_U32_SPAN: Final = 1 << 32
_MODEL_QUERY_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/@+"
)

log = get_logger("actors.ingress")


@dataclasses.dataclass(frozen=True, slots=True)
class IngressLimits:
    """What one HTTP request may cost the ingress."""

    api: ApiLimits = dataclasses.field(default_factory=ApiLimits)
    #: Seconds for the whole body to arrive (a slow body is answered 408).
    body_read_timeout_s: float = 10.0
    #: Seconds from admission to the last reply (the dispatcher's deadline too).
    request_timeout_s: float = 300.0
    #: A body larger than the limit is read and dropped up to this many bytes,
    #: so the client, still uploading, receives the 413 rather than a reset;
    #: beyond it the 413 is sent at once and the connection closed.
    max_discard_bytes: int = 8 * 1024 * 1024
    #: Request headers, by count and by total size.
    max_headers: int = 64
    max_header_bytes: int = 16 * 1024
    #: Attestations produced at once (each costs the TPM); more answer 429.
    max_concurrent_attestations: int = 2

    def __post_init__(self) -> None:
        if not self.body_read_timeout_s > 0 or not self.request_timeout_s > 0:
            raise ValueError("timeouts must be positive")
        if self.max_discard_bytes < self.api.max_body_bytes:
            raise ValueError("max_discard_bytes must be at least the body limit")
        if self.max_headers < 8 or self.max_header_bytes < 1024:
            raise ValueError("max_headers >= 8 and max_header_bytes >= 1024")
        if self.max_concurrent_attestations < 1:
            raise ValueError("max_concurrent_attestations must be at least 1")


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseFiles:
    """The release bundle this node booted, as the files it verified
    (``root.json``, ``targets.json``, ``log-proof.json``): what
    ``GET /v1/mantle/release`` hands a client, which checks them against its
    own pinned release root and log key, never against anything served."""

    root: bytes = dataclasses.field(repr=False)
    targets: bytes = dataclasses.field(repr=False)
    log_proof: bytes = dataclasses.field(repr=False)

    def render(self) -> bytes:
        return json.dumps(
            {
                "root.json": base64.b64encode(self.root).decode("ascii"),
                "targets.json": base64.b64encode(self.targets).decode("ascii"),
                "log-proof.json": base64.b64encode(self.log_proof).decode("ascii"),
            },
            separators=(",", ":"),
        ).encode("ascii")


@dataclasses.dataclass(slots=True)
class _Exchange:
    """One request's response side: whether the status line went out."""

    send: Send
    started: bool = False
    status: int = 0

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        self.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, *, more: bool = False) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, payload: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode("ascii")),
            (b"cache-control", b"no-store"),
            *(extra or []),
        ]
        await self.start(status, headers)
        await self.body(payload)

    async def error(
        self, error: OpenAIRequestError, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await self.json(error.status, render_error(error), extra)


def _reply_error(reply: ErrorReply | SealedRecord) -> OpenAIRequestError:
    """The HTTP error for an ``ErrorReply`` from the cluster (codes only); a
    sealed record where a plain reply belongs is the cluster's failure."""
    if isinstance(reply, SealedRecord):
        return OpenAIRequestError(RequestCheck.SERVER_ERROR, "the cluster failed the request")
    code = reply.code
    if code is ErrorCode.NOT_FOUND:
        return OpenAIRequestError(RequestCheck.MODEL_NOT_FOUND, "the model does not exist")
    if code is ErrorCode.OVERLOADED:
        return OpenAIRequestError(RequestCheck.RATE_LIMITED, "the model is overloaded")
    if code is ErrorCode.DEADLINE_EXCEEDED:
        return OpenAIRequestError(RequestCheck.DEADLINE, "the request ran out of time")
    if code is ErrorCode.BAD_REQUEST:
        return OpenAIRequestError(
            RequestCheck.INVALID_PARAMETER, "the inference node refused the request"
        )
    if code in (ErrorCode.UNAVAILABLE, ErrorCode.CANCELLED) or reply.retryable:
        return OpenAIRequestError(
            RequestCheck.SERVER_ERROR, "the cluster could not finish the request", status=503
        )
    return OpenAIRequestError(RequestCheck.SERVER_ERROR, "the cluster failed the request")


def _usage(done: GenerateDone) -> Usage:
    return Usage(prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens)


_HTTP_VERSIONS: Final = ("1.0", "1.1")

_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


class IngressApp:
    """The ASGI application (see :func:`create_app`)."""

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        tenants: TenantStore,
        attestation: AttestationSource,
        tls_spki_der: bytes,
        tlog_app: ASGIApp,
        clock: Clock,
        random: Random,
        limits: IngressLimits,
        release: ReleaseFiles | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._release = release.render() if release is not None else None
        self._listings_running = 0
        self._tenants = tenants
        self._attestation = attestation
        self._tls_binding = tls_key_binding(tls_spki_der)
        self._tls_spki_sha256 = hashlib.sha256(tls_spki_der).hexdigest()
        self._tlog_app = tlog_app
        self._clock = clock
        self._random = random
        self._limits = limits
        self._attestations_running = 0
        self._routes: dict[str, tuple[str, Callable[..., Awaitable[None]]]] = {
            "/v1/models": ("GET", self._models),
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/responses": ("POST", self._responses),
            "/v1/attestation": ("GET", self._attestation_document),
            "/v1/mantle/nodes": ("GET", self._mantle_nodes),
            "/v1/mantle/release": ("GET", self._mantle_release),
            "/v1/mantle/chat": ("POST", self._mantle_chat),
            "/healthz": ("GET", self._health),
        }

    # -- ASGI entry ------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        if scope.get("http_version") not in _HTTP_VERSIONS:
            # HTTP/2 reached by prior knowledge or h2c, which hypercorn
            # honours whatever ALPN offered: the limits here are HTTP/1.1's.
            exchange = _Exchange(send)
            await exchange.error(
                OpenAIRequestError(RequestCheck.HTTP_VERSION, "this server speaks HTTP/1.1 only")
            )
            log.info("http_request", path="unknown", state=str(exchange.status), tenant=None)
            return
        path = scope.get("path", "")
        if isinstance(path, str) and path.startswith(CT_PREFIX):
            await self._tlog_app(scope, receive, send)
            return
        exchange = _Exchange(send)
        route = self._routes.get(path) if isinstance(path, str) else None
        started_at = self._clock.monotonic()
        tenant: list[str] = []
        try:
            await self._dispatch(scope, receive, exchange, route, tenant)
        except Exception as exc:
            # Anything unexpected is reported by type and location only (its
            # text may quote the request) and answered 500 if nothing was sent.
            log.error("ingress_request_failed", **exception_summary(exc))
            if not exchange.started:
                await exchange.error(
                    OpenAIRequestError(RequestCheck.SERVER_ERROR, "the request failed")
                )
        log.info(
            "http_request",
            path=path if route is not None else "unknown",
            state=str(exchange.status),
            tenant=tenant[0] if tenant else None,
            duration_ms=round((self._clock.monotonic() - started_at) * 1000, 1),
        )

    async def _dispatch(
        self,
        scope: Scope,
        receive: Receive,
        exchange: _Exchange,
        route: tuple[str, Callable[..., Awaitable[None]]] | None,
        tenant: list[str],
    ) -> None:
        if route is None:
            await exchange.error(
                OpenAIRequestError(RequestCheck.ROUTE_NOT_FOUND, "no such endpoint")
            )
            return
        method, handler = route
        if scope.get("method") != method:
            await exchange.error(
                OpenAIRequestError(RequestCheck.METHOD, f"this endpoint takes {method} only"),
                [(b"allow", method.encode("ascii"))],
            )
            return
        headers = scope.get("headers") or []
        if len(headers) > self._limits.max_headers or (
            sum(len(k) + len(v) for k, v in headers) > self._limits.max_header_bytes
        ):
            await exchange.error(
                OpenAIRequestError(
                    RequestCheck.HEADERS,
                    f"at most {self._limits.max_headers} request headers and "
                    f"{self._limits.max_header_bytes} bytes of them",
                ),
                [(b"connection", b"close")],
            )
            return
        if path_is_public(scope.get("path", "")):
            await handler(scope, receive, exchange)
            return
        found = self._authenticate(headers)
        if found is None:
            await exchange.error(
                OpenAIRequestError(
                    RequestCheck.AUTHENTICATION,
                    "missing or unknown API key (Authorization: Bearer <key>)",
                ),
                [(b"www-authenticate", b'Bearer realm="mantle"')],
            )
            return
        tenant.append(found)
        await handler(scope, receive, exchange, found)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- request pieces ----------------------------------------------------------

    def _authenticate(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        values = [v for k, v in headers if k.lower() == b"authorization"]
        if len(values) != 1:
            return None
        scheme, _, key = values[0].partition(b" ")
        key = key.strip()
        if scheme.lower() != b"bearer" or not 0 < len(key) <= MAX_API_KEY_BYTES:
            return None
        return self._tenants.authenticate(key)

    @staticmethod
    def _content_type_is(headers: list[tuple[bytes, bytes]], expected: bytes) -> bool:
        values = [v for k, v in headers if k.lower() == b"content-type"]
        if len(values) != 1:
            return False
        media, *params = values[0].split(b";")
        if media.strip().lower() != expected:
            return False
        for param in params:
            name, _, value = param.partition(b"=")
            if name.strip().lower() == b"charset" and value.strip().strip(b'"').lower() not in (
                b"utf-8",
                b"utf8",
            ):
                return False
        return True

    async def _read_body(
        self,
        scope: Scope,
        receive: Receive,
        exchange: _Exchange,
        *,
        media_type: str = "application/json",
        limit: int | None = None,
    ) -> bytes | None:
        """The request body, or ``None`` after answering why it was refused
        (or when the client went away: nobody is left to answer)."""
        headers = scope.get("headers") or []
        if not self._content_type_is(headers, media_type.encode("ascii")):
            await exchange.error(
                OpenAIRequestError(
                    RequestCheck.CONTENT_TYPE, f"the request body must be {media_type}"
                )
            )
            return None
        if limit is None:
            limit = self._limits.api.max_body_bytes
        declared = _content_length(headers)
        too_large = OpenAIRequestError(
            RequestCheck.BODY_SIZE, f"the request body is larger than {limit} bytes"
        )
        if declared is not None and declared > self._limits.max_discard_bytes:
            await exchange.error(too_large, [(b"connection", b"close")])
            return None
        parts: list[bytes] = []
        received = 0
        overflow = False
        timed_out = True
        gone = False

        async def read_all() -> None:
            nonlocal received, overflow, timed_out, gone
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone, timed_out = True, False
                    return
                chunk = message.get("body", b"")
                more = bool(message.get("more_body", False))
                received += len(chunk)
                if received > self._limits.max_discard_bytes:
                    overflow = True
                    break
                if received > limit:
                    overflow = True
                    parts.clear()  # read on and drop, so the client sees the 413
                elif not overflow:
                    parts.append(chunk)
            timed_out = False

        await _run_with_timeout(self._clock, self._limits.body_read_timeout_s, read_all)
        if gone:
            return None
        if timed_out:
            await exchange.error(
                OpenAIRequestError(
                    RequestCheck.BODY_DEADLINE,
                    "the request body did not arrive within "
                    f"{self._limits.body_read_timeout_s:g} s",
                ),
                [(b"connection", b"close")],
            )
            return None
        if overflow:
            close = received > self._limits.max_discard_bytes
            await exchange.error(too_large, [(b"connection", b"close")] if close else None)
            return None
        return b"".join(parts)

    # -- routes --------------------------------------------------------------------

    async def _health(self, scope: Scope, receive: Receive, exchange: _Exchange) -> None:
        await exchange.json(200, b'{"status":"ok"}')

    async def _models(
        self, scope: Scope, receive: Receive, exchange: _Exchange, tenant: str
    ) -> None:
        serving: dict[str, int] = {}
        for listing in self._dispatcher.models():
            serving[listing.model] = serving.get(listing.model, 0) + listing.nodes
        await exchange.json(200, render_model_list(sorted(serving.items())))

    async def _attestation_document(
        self, scope: Scope, receive: Receive, exchange: _Exchange
    ) -> None:
        nonce = _nonce_from_query(scope.get("query_string", b""))
        if nonce is None:
            await exchange.error(
                OpenAIRequestError(
                    RequestCheck.INVALID_PARAMETER,
                    f"nonce must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes in hex "
                    "(?nonce=HEX, nothing else)",
                    param="nonce",
                )
            )
            return
        if self._attestations_running >= self._limits.max_concurrent_attestations:
            await exchange.error(
                OpenAIRequestError(RequestCheck.RATE_LIMITED, "attestations are busy; retry"),
                [(b"retry-after", b"1")],
            )
            return
        self._attestations_running += 1
        try:
            document = await self._attestation(nonce)
        finally:
            self._attestations_running -= 1
        payload = json.dumps(
            {
                "document": base64.b64encode(document).decode("ascii"),
                "nonce": nonce.hex(),
                "tls_key_binding": self._tls_binding.hex(),
                "tls_spki_sha256": self._tls_spki_sha256,
            },
            separators=(",", ":"),
        ).encode("ascii")
        await exchange.json(200, payload)

    def _ids(self) -> tuple[str, int]:
        return self._random.token_bytes(12).hex(), self._clock.wall_ms() // 1000

    async def _chat(self, scope: Scope, receive: Receive, exchange: _Exchange, tenant: str) -> None:
        body = await self._read_body(scope, receive, exchange)
        if body is None:
            return
        parsed = None
        refusal: OpenAIRequestError | None = None
        try:
            parsed = parse_chat_request(
                body, limits=self._limits.api, default_seed=self._random.randbelow(_U32_SPAN)
            )
        except OpenAIRequestError as exc:
            refusal = exc
        if refusal is not None or parsed is None:
            assert refusal is not None
            await exchange.error(refusal)
            return
        suffix, created = self._ids()
        model = parsed.generate.model
        completion_id = "chatcmpl-" + suffix
        if parsed.stream:
            renderer = ChatStreamRenderer(
                completion_id=completion_id,
                created=created,
                model=model,
                include_usage=parsed.include_usage,
            )
            await self._generate(
                parsed.generate,
                tenant,
                receive,
                exchange,
                _Stream(renderer),
            )
        else:
            await self._generate(
                parsed.generate,
                tenant,
                receive,
                exchange,
                _ChatWhole(completion_id, created, model),
            )

    async def _responses(
        self, scope: Scope, receive: Receive, exchange: _Exchange, tenant: str
    ) -> None:
        body = await self._read_body(scope, receive, exchange)
        if body is None:
            return
        parsed: ResponsesRequest | None = None
        refusal: OpenAIRequestError | None = None
        try:
            parsed = parse_responses_request(
                body, limits=self._limits.api, default_seed=self._random.randbelow(_U32_SPAN)
            )
        except OpenAIRequestError as exc:
            refusal = exc
        if refusal is not None or parsed is None:
            assert refusal is not None
            await exchange.error(refusal)
            return
        suffix, created = self._ids()
        renderer = ResponseRenderer(
            response_id="resp_" + suffix,
            message_id="msg_" + suffix,
            created_at=created,
            request=parsed,
        )
        answer: _Answer = _Stream(renderer) if parsed.stream else _ResponsesWhole(renderer)
        await self._generate(parsed.generate, tenant, receive, exchange, answer)

    # -- end to end (the Mantle client) ---------------------------------------------

    async def _mantle_release(
        self, scope: Scope, receive: Receive, exchange: _Exchange, tenant: str
    ) -> None:
        if self._release is None:
            await exchange.error(
                OpenAIRequestError(RequestCheck.ROUTE_NOT_FOUND, "this node serves no release")
            )
            return
        await exchange.json(200, self._release)

    async def _mantle_nodes(
        self, scope: Scope, receive: Receive, exchange: _Exchange, tenant: str
    ) -> None:
        query = _nodes_query(scope.get("query_string", b""))
        if query is None:
            await exchange.error(
                OpenAIRequestError(
                    RequestCheck.INVALID_PARAMETER,
                    f"?model=ID&nonce=HEX, nothing else: a model id of 1 to "
                    f"{MAX_MODEL_QUERY_LEN} characters and a nonce of {MIN_NONCE_BYTES} "
                    f"to {MAX_NONCE_BYTES} bytes in hex",
                    param="nonce",
                )
            )
            return
        model, nonce = query
        if self._listings_running >= self._limits.max_concurrent_attestations:
            await exchange.error(
                OpenAIRequestError(RequestCheck.RATE_LIMITED, "attestations are busy; retry"),
                [(b"retry-after", b"1")],
            )
            return
        self._listings_running += 1
        refusal: OpenAIRequestError | None = None
        extra: list[tuple[bytes, bytes]] = []
        documents = None
        try:
            documents = await self._dispatcher.node_documents(model, nonce)
        except UnknownModel:
            refusal = OpenAIRequestError(
                RequestCheck.MODEL_NOT_FOUND,
                "the model does not exist in this cluster (GET /v1/models lists them)",
                param="model",
            )
        except (Overloaded, NoCapacity):
            extra.append((b"retry-after", b"1"))
            refusal = OpenAIRequestError(RequestCheck.RATE_LIMITED, "the scheduler is busy; retry")
        finally:
            self._listings_running -= 1
        if refusal is not None or documents is None:
            assert refusal is not None
            await exchange.error(refusal, extra)
            return
        payload = json.dumps(
            {
                "nodes": [
                    {
                        "node": found.node,
                        "document": base64.b64encode(found.document).decode("ascii"),
                        "kind": found.kind.value,
                        "static_key": base64.b64encode(found.static_key).decode("ascii"),
                    }
                    for found in documents
                ]
            },
            separators=(",", ":"),
        ).encode("ascii")
        await exchange.json(200, payload)

    async def _mantle_chat(
        self, scope: Scope, receive: Receive, exchange: _Exchange, tenant: str
    ) -> None:
        """A sealed request: its routing fields (model, max tokens, the nodes'
        key bindings) are all that is read; the records are relayed as the
        node sealed them."""
        body = await self._read_body(
            scope,
            receive,
            exchange,
            media_type=SEALED_REQUEST_MEDIA_TYPE,
            limit=MAX_SEALED_REQUEST_BYTES,
        )
        if body is None:
            return
        sealed: SealedRequest | None = None
        with contextlib.suppress(E2EError):
            sealed = SealedRequest.decode(body)
        if sealed is None:
            await exchange.error(
                OpenAIRequestError(
                    RequestCheck.INVALID_PARAMETER,
                    "the body is not an encoded sealed request (e2e.request)",
                )
            )
            return
        await self._generate(sealed, tenant, receive, exchange, _SealedStream())

    # -- generation ----------------------------------------------------------------

    async def _generate(
        self,
        request: GenerateRequest | SealedRequest,
        tenant: str,
        receive: Receive,
        exchange: _Exchange,
        answer: _Answer,
    ) -> None:
        deadline = self._clock.monotonic() + self._limits.request_timeout_s
        refusal: OpenAIRequestError | None = None
        extra: list[tuple[bytes, bytes]] = []
        submission: Submission | None = None
        try:
            submission = await self._dispatcher.submit(request, tenant=tenant, deadline=deadline)
        except UnknownModel:
            refusal = OpenAIRequestError(
                RequestCheck.MODEL_NOT_FOUND,
                "the model does not exist in this cluster (GET /v1/models lists them)",
                param="model",
            )
        except Overloaded as exc:
            retry_after = max(1, math.ceil(exc.retry_after))
            extra.append((b"retry-after", str(retry_after).encode("ascii")))
            refusal = OpenAIRequestError(
                RequestCheck.RATE_LIMITED, f"the model is busy; retry after {retry_after} s"
            )
        except NoCapacity:
            refusal = OpenAIRequestError(
                RequestCheck.NO_CAPACITY, "no node serves the model right now; retry later"
            )
        except Replayed:
            refusal = OpenAIRequestError(
                RequestCheck.REPLAYED, "this request id was already submitted; seal it afresh"
            )
        if refusal is not None or submission is None:
            assert refusal is not None
            await exchange.error(refusal, extra)
            return
        ended = False
        outcome = "timeout"

        async def relay() -> None:
            nonlocal ended, outcome
            ended = await answer.relay(submission, exchange)
            outcome = "ended"

        async def watch_disconnect(scope: anyio.CancelScope) -> None:
            nonlocal outcome
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    outcome = "gone"
                    scope.cancel()
                    return

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch_disconnect, group.cancel_scope)

                async def timer() -> None:
                    await self._clock.sleep(max(0.0, deadline - self._clock.monotonic()))
                    group.cancel_scope.cancel()

                group.start_soon(timer)
                await relay()
                group.cancel_scope.cancel()
        finally:
            if not ended:
                with anyio.CancelScope(shield=True):
                    await submission.aclose()
        if outcome == "timeout":
            await answer.fail(
                exchange,
                OpenAIRequestError(RequestCheck.DEADLINE, "the request ran out of time"),
            )


def path_is_public(path: object) -> bool:
    """Routes answered without an API key: health and this node's attestation."""
    return path in ("/healthz", "/v1/attestation")


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    values = [v for k, v in headers if k.lower() == b"content-length"]
    if len(values) != 1 or not values[0].isdigit() or len(values[0]) > 18:
        return None
    return int(values[0])


def _hex_nonce(text: bytes) -> bytes | None:
    if not 2 * MIN_NONCE_BYTES <= len(text) <= 2 * MAX_NONCE_BYTES or len(text) % 2:
        return None
    if not all(c in b"0123456789abcdefABCDEF" for c in text):
        return None
    return bytes.fromhex(text.decode("ascii"))


def _nodes_query(raw: object) -> tuple[str, bytes] | None:
    """``model`` and ``nonce`` of ``?model=M&nonce=HEX`` (either order, each
    once, nothing else; the model id in the characters model ids use, with
    no percent-encoding), or ``None``."""
    if not isinstance(raw, bytes) or len(raw) > 512:
        return None
    fields: dict[bytes, bytes] = {}
    for part in raw.split(b"&"):
        name, sep, value = part.partition(b"=")
        if not sep or name not in (b"model", b"nonce") or name in fields:
            return None
        fields[name] = value
    if len(fields) != 2:
        return None
    model = fields[b"model"].decode("ascii", "replace")
    if not 0 < len(model) <= MAX_MODEL_QUERY_LEN or not set(model) <= _MODEL_QUERY_CHARS:
        return None
    nonce = _hex_nonce(fields[b"nonce"])
    return (model, nonce) if nonce is not None else None


def _nonce_from_query(raw: object) -> bytes | None:
    if not isinstance(raw, bytes) or not raw.startswith(b"nonce=") or b"&" in raw:
        return None
    return _hex_nonce(raw[len(b"nonce=") :])


async def _run_with_timeout(
    clock: Clock, seconds: float, work: Callable[[], Awaitable[None]]
) -> None:
    """Run ``work``, cancelling it after ``seconds`` of the Clock seam's time."""
    async with anyio.create_task_group() as group:

        async def timer() -> None:
            await clock.sleep(seconds)
            group.cancel_scope.cancel()

        group.start_soon(timer)
        await work()
        group.cancel_scope.cancel()


# --- answers: how replies become bytes -------------------------------------------------


class _Answer:
    """Turns a submission's replies into the HTTP answer."""

    async def relay(self, submission: Submission, exchange: _Exchange) -> bool:
        """Relay until the submission ends; whether it ended (I7) on its own."""
        raise NotImplementedError

    async def fail(self, exchange: _Exchange, error: OpenAIRequestError) -> None:
        raise NotImplementedError


class _Whole(_Answer):
    """Collects every chunk, then answers once."""

    async def relay(self, submission: Submission, exchange: _Exchange) -> bool:
        pieces: list[CustomerData] = []
        async for reply in submission:
            if isinstance(reply, GenerateChunk):
                pieces.append(reply.text)
            elif isinstance(reply, GenerateDone):
                await exchange.json(200, self.render(pieces, reply))
                return True
            else:
                await exchange.error(_reply_error(reply))
                return True
        await exchange.error(
            OpenAIRequestError(RequestCheck.SERVER_ERROR, "the request ended without an answer")
        )
        return True

    def render(self, pieces: list[CustomerData], done: GenerateDone) -> bytes:
        raise NotImplementedError

    async def fail(self, exchange: _Exchange, error: OpenAIRequestError) -> None:
        if not exchange.started:
            await exchange.error(error)


class _ChatWhole(_Whole):
    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self._id, self._created, self._model = completion_id, created, model

    def render(self, pieces: list[CustomerData], done: GenerateDone) -> bytes:
        return render_chat_completion(
            completion_id=self._id,
            created=self._created,
            model=self._model,
            pieces=pieces,
            finish_reason=done.finish_reason,
            usage=_usage(done),
        )


class _ResponsesWhole(_Whole):
    def __init__(self, renderer: ResponseRenderer) -> None:
        self._renderer = renderer

    def render(self, pieces: list[CustomerData], done: GenerateDone) -> bytes:
        for piece in pieces:
            self._renderer.add(piece)
        return self._renderer.render_response(done.finish_reason, _usage(done))


class _EventRenderer(Protocol):
    """What renders one API's stream events (:class:`ChatStreamRenderer`,
    :class:`ResponseRenderer`)."""

    def start(self) -> bytes: ...
    def delta(self, text: CustomerData) -> bytes: ...
    def finish(self, finish_reason: FinishReason, usage: Usage) -> bytes: ...
    def fail(self, error: OpenAIRequestError) -> bytes: ...


class _Stream(_Answer):
    """Server-sent events, flushed one by one; a failure after the first event
    ends the stream with an error event. ``renderer`` gives the events their
    API's shapes (chat completions or responses)."""

    def __init__(self, renderer: _EventRenderer) -> None:
        self._renderer = renderer

    async def relay(self, submission: Submission, exchange: _Exchange) -> bool:
        async for reply in submission:
            if not exchange.started:
                if isinstance(reply, ErrorReply):
                    await exchange.error(_reply_error(reply))
                    return True
                await exchange.start(200, list(_SSE_HEADERS))
                await exchange.body(self.start(), more=True)
            if isinstance(reply, GenerateChunk):
                await exchange.body(self.delta(reply.text), more=True)
            elif isinstance(reply, GenerateDone):
                await exchange.body(self.finish(reply))
                return True
            else:
                await exchange.body(self.failure(_reply_error(reply)))
                return True
        await self.fail(
            exchange,
            OpenAIRequestError(RequestCheck.SERVER_ERROR, "the request ended without an answer"),
        )
        return True

    async def fail(self, exchange: _Exchange, error: OpenAIRequestError) -> None:
        if exchange.started:
            await exchange.body(self.failure(error))
        else:
            await exchange.error(error)

    def start(self) -> bytes:
        return self._renderer.start()

    def delta(self, text: CustomerData) -> bytes:
        return self._renderer.delta(text)

    def finish(self, done: GenerateDone) -> bytes:
        return self._renderer.finish(done.finish_reason, _usage(done))

    def failure(self, error: OpenAIRequestError) -> bytes:
        return self._renderer.fail(error)


class _SealedStream(_Answer):
    """The sealed records, one frame each (:mod:`protocol.e2e_stream`), as
    they come; an error before the first is an HTTP error, after it an error
    frame. The records are the node's bytes: nothing here can open them."""

    async def relay(self, submission: Submission, exchange: _Exchange) -> bool:
        async for reply in submission:
            if isinstance(reply, SealedRecord):
                if not exchange.started:
                    await exchange.start(200, list(_STREAM_HEADERS))
                await exchange.body(record_frame(reply.record), more=not reply.final)
                if reply.final:
                    return True
            elif isinstance(reply, ErrorReply):
                await self.fail(exchange, _reply_error(reply))
                return True
            else:
                # A plaintext reply to a sealed request: never relayed.
                await self.fail(
                    exchange,
                    OpenAIRequestError(RequestCheck.SERVER_ERROR, "the cluster failed the request"),
                )
                return True
        await self.fail(
            exchange,
            OpenAIRequestError(RequestCheck.SERVER_ERROR, "the request ended without an answer"),
        )
        return True

    async def fail(self, exchange: _Exchange, error: OpenAIRequestError) -> None:
        if exchange.started:
            await exchange.body(error_frame(render_error(error)))
        else:
            await exchange.error(error)


_STREAM_HEADERS: Final = [
    (b"content-type", STREAM_MEDIA_TYPE.encode("ascii")),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


def create_app(
    *,
    dispatcher: Dispatcher,
    tenants: TenantStore,
    attestation: AttestationSource,
    tls_spki_der: bytes,
    tlog_app: ASGIApp,
    clock: Clock,
    random: Random,
    limits: IngressLimits | None = None,
    release: ReleaseFiles | None = None,
) -> IngressApp:
    """The ingress's ASGI application.

    ``attestation`` produces this node's document over a client's nonce; its
    ``user_data`` must be ``tls_key_binding(tls_spki_der)``, the key of the
    certificate the HTTPS server presents (``nodes.https``), which
    ``/v1/attestation`` reports next to the document. ``tlog_app`` serves
    ``/ct/v1/`` (the daemon passes ``nodes.tlog.TlogHttpApp``). ``random``
    draws response ids and the seed of unseeded requests. ``release`` is
    the bundle this node booted, served at ``/v1/mantle/release`` (without
    it that route answers 404).
    """
    return IngressApp(
        dispatcher=dispatcher,
        tenants=tenants,
        attestation=attestation,
        tls_spki_der=tls_spki_der,
        tlog_app=tlog_app,
        clock=clock,
        random=random,
        limits=limits if limits is not None else IngressLimits(),
        release=release,
    )
