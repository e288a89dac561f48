"""Serve a log read-only over HTTP with hypercorn on trio."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hypercorn.config import Config
from hypercorn.trio import serve

from nodes.tlog._http import TlogHttpApp


async def serve_tlog(
    app: TlogHttpApp,
    bind: str,
    *,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
) -> None:
    """Serve ``app`` on ``bind`` (``host:port``) until ``shutdown_trigger`` returns."""
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    if shutdown_trigger is None:
        await serve(app, config)  # type: ignore[arg-type]
    else:
        await serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
