"""Running an :class:`ActorSystem` on trio (the production composition)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from actors._core._driver import TrioDriver
from actors._core._system import DEFAULT_MAILBOX, ActorSystem
from actors._core._types import CrashReport
from actors.seams.clock import Clock
from actors.seams.random import Random


@asynccontextmanager
async def open_actor_system(
    node: str = "local",
    *,
    random: Random,
    clock: Clock,
    default_mailbox: int = DEFAULT_MAILBOX,
    on_crash: Callable[[CrashReport], None] | None = None,
    shutdown_timeout: float = 5.0,
) -> AsyncIterator[ActorSystem]:
    """An actor system whose actors are tasks of a trio nursery.

    On exit every root actor is stopped in reverse spawn order (supervisors
    take their trees down in order), then anything left is cancelled.
    """
    async with trio.open_nursery() as nursery:
        system = ActorSystem(
            node,
            TrioDriver(nursery, clock),
            random=random,
            default_mailbox=default_mailbox,
            on_crash=on_crash,
        )
        try:
            yield system
        finally:
            with trio.move_on_after(shutdown_timeout * 2) as scope:
                scope.shield = True
                await system.shutdown(shutdown_timeout)
            nursery.cancel_scope.cancel()
