"""``mantle.AsyncClient`` and ``mantle.Client``: the OpenAI SDK's shapes, end to end.

Before a model's first request the client runs the trust walk
(:class:`mantle._walk.TrustWalk`) and keeps the verified candidates for
``freshness_s``; a cached set costs a dictionary lookup and a clock reading
per request. Inside ``async with`` (or ``with`` for :class:`Client`) a task
refreshes each set in the background once half its window has passed, so
requests do not wait for it; outside, a request past the window verifies
again before it is sealed. There is no setting that skips a check.

Each request is checked as the ingress would check it, sealed to the verified
candidates, and sent as ``POST /v1/mantle/chat``
(``application/vnd.mantle.e2e+msgpack``); the answer is a stream of frames
(:mod:`protocol.e2e_stream`: sealed records, or one error frame), each
record opened in order (:mod:`mantle._exchange`). Closing a stream closes the HTTP response, which
cancels generation on the node. Verification fetches are retried; generation
is not.

:class:`AsyncClient` runs on asyncio and trio (anyio); :class:`Client` runs an
:class:`AsyncClient` on an event loop in a thread of its own (an anyio
blocking portal) and blocks on it.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Generic, Literal, TypeVar, overload

import anyio
import anyio.abc
import anyio.from_thread
import httpx2
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent

from actors.seams.clock import WallClock
from actors.seams.random import Random
from mantle._config import ClientSettings, PinSource, load_settings
from mantle._errors import APIError, AttestationError, ClientCheck, ClientTimeout
from mantle._exchange import ChatCompletion, Exchange, Kind, Prepared, Response, prepare
from mantle._http import MAX_ERROR_BODY_BYTES, api_error_of, read_capped
from mantle._ingress import pinned_tls_context
from mantle._seams import SystemClock, SystemRandom
from mantle._walk import DEFAULT_DOCUMENT_MAX_AGE_S, TrustWalk, VerifiedNodes
from mantle.trust_state import TrustStateFile
from protocol.e2e import Receipt, SavedReceipt
from protocol.e2e_stream import (
    ERROR_FRAME,
    SEALED_REQUEST_MEDIA_TYPE,
    StreamDecoder,
    StreamError,
)

CHAT_ROUTE: Final = "/v1/mantle/chat"
SEALED_CONTENT_TYPE: Final = SEALED_REQUEST_MEDIA_TYPE
DEFAULT_TIMEOUT_S: Final = 600.0
DEFAULT_VERIFY_TIMEOUT_S: Final = 30.0
DEFAULT_FRESHNESS_S: Final = 60.0

ItemT = TypeVar("ItemT")


class FrameReader:
    """The answer's frames (:mod:`protocol.e2e_stream`) to sealed records; an
    error frame (the request failed after it started) is an :class:`APIError`
    from its OpenAI error body, a malformed stream an :class:`AttestationError`
    (``response``)."""

    def __init__(self) -> None:
        self._decoder = StreamDecoder()
        self._failure: APIError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[tuple[int, bytes]] | None = None
        try:
            frames = self._decoder.feed(data)
        except StreamError as error:
            check = error.check
        if frames is None:
            raise AttestationError(ClientCheck.RESPONSE, f"{check.value}: the answer is refused")
        records: list[bytes] = []
        for kind, payload in frames:
            if kind == ERROR_FRAME:
                # Raised by raise_failure, once the records before it were taken.
                self._failure = api_error_of(502, {}, payload)
                break
            records.append(payload)
        return records

    def raise_failure(self) -> None:
        """Raise the error frame's :class:`APIError`, if one arrived."""
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        refused: StreamError | None = None
        try:
            self._decoder.close()
        except StreamError as error:
            refused = error
        if refused is not None:
            raise AttestationError(
                ClientCheck.RESPONSE, f"{refused.check.value}: the answer is refused"
            )


class AsyncStream(Generic[ItemT]):
    """A streamed answer: iterate it (``async for``) for the SDK's chunks or
    events; :attr:`receipt` once it ended; :meth:`aclose` cancels generation."""

    def __init__(
        self, response: httpx2.Response, exchange: Exchange, read_timeout_s: float
    ) -> None:
        self._response = response
        self._exchange = exchange
        self._read_timeout_s = read_timeout_s
        self._items: AsyncGenerator[ItemT, None] = self._iterate()

    @property
    def receipt(self) -> Receipt | None:
        """The verified receipt, once the stream ended (as on a whole answer)."""
        saved = self._exchange.saved_receipt
        return saved.receipt if saved is not None else None

    @property
    def saved_receipt(self) -> SavedReceipt | None:
        """The verified receipt with the node's document (a receipt file)."""
        return self._exchange.saved_receipt

    async def _iterate(self) -> AsyncGenerator[ItemT, None]:
        frames = FrameReader()
        try:
            async for data in self._response.aiter_raw():
                for record in frames.feed(data):
                    for item in self._exchange.stream_record(record):
                        yield item
                frames.raise_failure()
            frames.close()
            self._exchange.end_of_stream()
        finally:
            await self._response.aclose()

    def __aiter__(self) -> AsyncIterator[ItemT]:
        return self

    async def __anext__(self) -> ItemT:
        return await self._items.__anext__()

    async def aclose(self) -> None:
        """Stop reading: the HTTP response closes and the node stops generating."""
        await self._items.aclose()
        await self._response.aclose()

    async def __aenter__(self) -> AsyncStream[ItemT]:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class AsyncCompletions:
    """``client.chat.completions`` of :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        stream: Literal[False] = False,
        stream_options: Mapping[str, Any] | None = None,
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        stream: Literal[True],
        stream_options: Mapping[str, Any] | None = None,
    ) -> AsyncStream[ChatCompletionChunk]: ...

    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        stream: bool = False,
        stream_options: Mapping[str, Any] | None = None,
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """As :meth:`openai.resources.chat.Completions.create`, sealed end to end."""
        arguments: dict[str, object] = {
            "model": model,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "stop": stop if isinstance(stop, str) or stop is None else list(stop),
            "stream": stream or None,
            "stream_options": dict(stream_options) if stream_options is not None else None,
        }
        return await self._client._request(Kind.CHAT, model, arguments, stream)  # type: ignore[return-value]


class AsyncChat:
    def __init__(self, client: AsyncClient) -> None:
        self.completions = AsyncCompletions(client)


class AsyncResponses:
    """``client.responses`` of :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        model: str,
        input: str | Iterable[Mapping[str, Any]],
        instructions: str | None = None,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stream: Literal[False] = False,
    ) -> Response: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        input: str | Iterable[Mapping[str, Any]],
        instructions: str | None = None,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stream: Literal[True],
    ) -> AsyncStream[ResponseStreamEvent]: ...

    async def create(
        self,
        *,
        model: str,
        input: str | Iterable[Mapping[str, Any]],
        instructions: str | None = None,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stream: bool = False,
    ) -> Response | AsyncStream[ResponseStreamEvent]:
        """As :meth:`openai.resources.responses.Responses.create`, sealed end to end."""
        arguments: dict[str, object] = {
            "model": model,
            "input": input if isinstance(input, str) else [dict(i) for i in input],
            "instructions": instructions,
            "max_output_tokens": max_output_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stream": stream or None,
        }
        return await self._client._request(Kind.RESPONSES, model, arguments, stream)  # type: ignore[return-value]


class AsyncClient:
    """The Mantle client on anyio (asyncio or trio); see the module docstring.

    Settings come from the arguments, ``MANTLE_*`` variables or the TOML file
    ``config_file`` / ``MANTLE_CONFIG`` (:mod:`mantle._config`); the pins are
    required. ``transport`` replaces the network (tests hand the server's
    ASGI app in); ``clock`` and ``random`` are the seams (the system's by
    default).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        attestation_root: PinSource | None = None,
        release_root: PinSource | None = None,
        tlog_key: PinSource | None = None,
        tls_cert: PinSource | None = None,
        trust_state: str | os.PathLike[str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        verify_timeout: float = DEFAULT_VERIFY_TIMEOUT_S,
        freshness_s: float = DEFAULT_FRESHNESS_S,
        document_max_age_s: float = DEFAULT_DOCUMENT_MAX_AGE_S,
        transport: httpx2.AsyncBaseTransport | None = None,
        clock: WallClock | None = None,
        random: Random | None = None,
    ) -> None:
        settings = load_settings(
            url=url,
            api_key=api_key,
            attestation_root=attestation_root,
            release_root=release_root,
            tlog_key=tlog_key,
            tls_cert=tls_cert,
            trust_state=trust_state,
            config_file=config_file,
        )
        if not 0 < freshness_s <= document_max_age_s:
            raise ValueError("freshness_s is positive and at most document_max_age_s")
        self.settings: ClientSettings = settings
        self._timeout_s = timeout
        self._freshness_ms = int(freshness_s * 1000)
        self._clock: WallClock = clock if clock is not None else SystemClock()
        self._random: Random = random if random is not None else SystemRandom()
        verify: ssl.SSLContext = (
            pinned_tls_context(settings.tls_cert_pem)
            if settings.tls_cert_pem is not None
            else ssl.create_default_context()
        )
        self._http = httpx2.AsyncClient(
            verify=verify,
            transport=transport,
            timeout=httpx2.Timeout(timeout, connect=verify_timeout),
            follow_redirects=False,
        )
        self._walk = TrustWalk(
            self._http,
            settings.url,
            api_key=settings.api_key,
            pins=settings.pins,
            state=TrustStateFile(settings.trust_state),
            random=self._random,
            clock=self._clock,
            deadline_s=verify_timeout,
            document_max_age_s=document_max_age_s,
        )
        self._verified: dict[str, VerifiedNodes] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._refreshing: set[str] = set()
        self._tasks: anyio.abc.TaskGroup | None = None
        self.chat = AsyncChat(self)
        self.responses = AsyncResponses(self)

    async def __aenter__(self) -> AsyncClient:
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        tasks, self._tasks = self._tasks, None
        try:
            if tasks is not None:
                # Only background refreshes run here (they swallow their own
                # errors): the body's exception leaves as it was raised, not
                # wrapped in an exception group.
                tasks.cancel_scope.cancel()
                await tasks.__aexit__(None, None, None)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- verification ----------------------------------------------------------------

    async def verify(self, model: str) -> VerifiedNodes:
        """Run the trust walk for ``model`` now and cache what it verified."""
        lock = self._locks.setdefault(model, anyio.Lock())
        async with lock:
            verified = await self._walk.verify(model)
            self._verified[model] = verified
            return verified

    async def verified_nodes(self, model: str) -> VerifiedNodes:
        """The verified candidates for ``model``: the cached set within its
        window (a background refresh begun past half of it), else a new walk."""
        cached = self._verified.get(model)
        now = self._clock.wall_ms()
        if cached is not None and now - cached.verified_at_ms < self._freshness_ms:
            if (
                now - cached.verified_at_ms >= self._freshness_ms // 2
                and self._tasks is not None
                and model not in self._refreshing
            ):
                self._refreshing.add(model)
                self._tasks.start_soon(self._refresh, model)
            return cached
        return await self.verify(model)

    async def _refresh(self, model: str) -> None:
        """Verify ``model`` again in the background. A failure drops the cached
        set, so the next request walks again and raises the refusal."""
        try:
            await self.verify(model)
        except Exception:
            self._verified.pop(model, None)
        finally:
            self._refreshing.discard(model)

    # -- requests --------------------------------------------------------------------

    async def _request(
        self, kind: Kind, model: str, arguments: Mapping[str, object], stream: bool
    ) -> ChatCompletion | Response | AsyncStream[Any]:
        nodes = await self.verified_nodes(model)
        prepared = prepare(kind, arguments, nodes, random=self._random)
        exchange = Exchange(
            prepared, nodes, random=self._random, created_s=self._clock.wall_ms() // 1000
        )
        if prepared.stream:
            response = await self._send(prepared)
            return AsyncStream(response, exchange, self._timeout_s)
        result: ChatCompletion | Response | None = None
        with anyio.move_on_after(self._timeout_s):
            response = await self._send(prepared)
            try:
                frames = FrameReader()
                async for data in response.aiter_raw():
                    for record in frames.feed(data):
                        exchange.collect(record)
                    frames.raise_failure()
                frames.close()
            finally:
                await response.aclose()
            result = exchange.result()
        if result is None:
            raise ClientTimeout(kind.value)
        return result

    async def _send(self, prepared: Prepared) -> httpx2.Response:
        request = self._http.build_request(
            "POST",
            self.settings.url + CHAT_ROUTE,
            content=prepared.encoded,
            headers={
                "Authorization": f"Bearer {self.settings.api_key}",
                "Content-Type": SEALED_CONTENT_TYPE,
                "Accept-Encoding": "identity",
            },
        )
        response = await self._http.send(request, stream=True, follow_redirects=False)
        if response.status_code != 200:
            try:
                body = await read_capped(response, MAX_ERROR_BODY_BYTES)
            finally:
                await response.aclose()
            raise api_error_of(response.status_code, dict(response.headers), body)
        return response


# -- the blocking client ----------------------------------------------------------------


class Stream(Generic[ItemT]):
    """A streamed answer of :class:`Client` (see :class:`AsyncStream`)."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, inner: AsyncStream[ItemT]):
        self._portal = portal
        self._inner = inner

    @property
    def receipt(self) -> Receipt | None:
        return self._inner.receipt

    @property
    def saved_receipt(self) -> SavedReceipt | None:
        return self._inner.saved_receipt

    def __iter__(self) -> Iterator[ItemT]:
        return self

    def __next__(self) -> ItemT:
        try:
            return self._portal.call(self._inner.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._portal.call(self._inner.aclose)

    def __enter__(self) -> Stream[ItemT]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _Completions:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, **arguments: Any) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """As :meth:`AsyncCompletions.create`, blocking."""
        result: ChatCompletion | Stream[ChatCompletionChunk] = self._client._call(
            self._client._async.chat.completions.create, arguments
        )
        return result


class _Chat:
    def __init__(self, client: Client) -> None:
        self.completions = _Completions(client)


class _Responses:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, **arguments: Any) -> Response | Stream[ResponseStreamEvent]:
        """As :meth:`AsyncResponses.create`, blocking."""
        result: Response | Stream[ResponseStreamEvent] = self._client._call(
            self._client._async.responses.create, arguments
        )
        return result


class Client:
    """The blocking Mantle client: an :class:`AsyncClient` on an event loop in a
    thread of its own (the arguments are :class:`AsyncClient`'s, plus
    ``backend``). Use it with ``with``, or call :meth:`close`."""

    def __init__(self, *args: Any, backend: str = "asyncio", **kwargs: Any) -> None:
        self._exit = contextlib.ExitStack()
        self._portal = self._exit.enter_context(
            anyio.from_thread.start_blocking_portal(backend=backend)
        )
        try:
            self._async = self._portal.call(lambda: _make_async(args, kwargs))
            self._exit.enter_context(self._portal.wrap_async_context_manager(self._async))
        except BaseException:
            self._exit.close()
            raise
        self.chat = _Chat(self)
        self.responses = _Responses(self)

    @property
    def settings(self) -> ClientSettings:
        return self._async.settings

    def verify(self, model: str) -> VerifiedNodes:
        return self._portal.call(self._async.verify, model)

    def _call(self, create: Any, arguments: Mapping[str, Any]) -> Any:
        async def run() -> Any:
            return await create(**arguments)

        result = self._portal.call(run)
        if isinstance(result, AsyncStream):
            return Stream(self._portal, result)
        return result

    def close(self) -> None:
        self._exit.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


async def _make_async(args: Sequence[Any], kwargs: Mapping[str, Any]) -> AsyncClient:
    return AsyncClient(*args, **kwargs)
