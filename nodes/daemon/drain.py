"""Draining: on SIGTERM a node stops taking new work and lets what it took finish.

One :class:`Drain` per node. Every entry point that takes work -- a
key-custody connection, an HTTP request -- enters :meth:`Drain.work` and
refuses when :attr:`Drain.draining` is set (a connection is closed, an HTTP
request answered 503); :meth:`Drain.wait_idle` returns once nothing is in
flight or the deadline passed, after which the daemon cancels what is left
(whose handlers end it with an error event of their own).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Final

import trio

from actors.channel import ConnectionHandler, SecureChannel

_DRAINING_BODY: Final = (
    b'{"error":{"message":"this node is shutting down; retry on another node",'
    b'"type":"unavailable","code":"draining"}}'
)

AsgiApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.draining = True

    @contextlib.contextmanager
    def work(self) -> Iterator[bool]:
        """Yields whether the work is admitted (False once draining)."""
        if self.draining:
            yield False
            return
        self.in_flight += 1
        self._idle = self._idle if self.in_flight > 1 else trio.Event()
        try:
            yield True
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def wait_idle(self, deadline_s: float) -> bool:
        """True if everything in flight finished within ``deadline_s``."""
        with trio.move_on_after(deadline_s):
            await self._idle.wait()
            return True
        return self.in_flight == 0


def gate_connections(handler: ConnectionHandler, drain: Drain) -> ConnectionHandler:
    """``handler`` for connections accepted before the drain; later ones are closed."""

    async def gated(channel: SecureChannel) -> None:
        with drain.work() as admitted:
            if admitted:
                await handler(channel)
                return
        await channel.aclose()

    return gated


def gate_http(app: AsgiApp, drain: Drain) -> AsgiApp:
    """The ASGI ``app`` behind the drain: once draining, new HTTP requests are
    answered 503 (with ``Connection: close``) before the app sees them."""

    async def gated(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        with drain.work() as admitted:
            if admitted:
                await app(scope, receive, send)
                return
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"connection", b"close"),
                    (b"retry-after", b"1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _DRAINING_BODY})

    return gated
