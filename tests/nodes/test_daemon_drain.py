"""The drain gate: once draining, new HTTP requests get 503 before the app runs,
requests already in flight finish, and wait_idle reports when they did."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
import trio
import trio.testing

from nodes.daemon.drain import Drain, gate_http

pytestmark = pytest.mark.anyio


async def test_draining_refuses_new_requests_and_lets_in_flight_finish() -> None:
    drain = Drain()
    release = trio.Event()
    served: list[str] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        served.append(scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    gated = gate_http(app, drain)
    sent: dict[str, list[MutableMapping[str, Any]]] = {"/a": [], "/b": []}

    async def request(path: str) -> None:
        async def send(message: MutableMapping[str, Any]) -> None:
            sent[path].append(message)

        async def receive() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": b""}

        await gated({"type": "http", "path": path}, receive, send)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request, "/a")
        await trio.testing.wait_all_tasks_blocked()
        assert drain.in_flight == 1
        drain.begin()
        await request("/b")  # refused at once, never reaches the app
        assert sent["/b"][0]["status"] == 503 and served == ["/a"]
        assert not await drain.wait_idle(0.01)  # /a still running
        release.set()
        assert await drain.wait_idle(5.0)
    assert sent["/a"][0]["status"] == 200
    assert drain.in_flight == 0
