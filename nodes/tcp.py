"""Secure channels on TCP: the listener and its accept loop for a :class:`SecureServer`.

``accept()`` failing for want of resources (``EMFILE``, ``ENFILE``,
``ENOBUFS``, ``ENOMEM``) is logged by its errno name and retried after a short
pause, as ``trio.serve_listeners`` does: running out of file descriptors is a
state a flood can put the process in, and the server must come back when it
passes, not end. Everything about a connection once accepted -- the
handshake cap, the channel cap, the attestation exchange -- is
:class:`actors.channel.SecureServer`'s.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Coroutine
from typing import Any, Final

import anyio
import anyio.abc
from anyio.abc import TaskStatus

from actors.channel import ConnectionHandler, SecureServer
from actors.log import get_logger

#: accept() errors that mean "out of resources for now", which the accept
#: loop waits out; the set and the pause are trio.serve_listeners'.
_ACCEPT_RESOURCE_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)
_ACCEPT_RETRY_S: Final = 0.1

_log = get_logger("channel")


async def serve_secure(
    host: str,
    port: int,
    handler: ConnectionHandler,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Accept TCP connections on ``host:port`` and serve each as a secure channel
    running ``handler``; ``options`` are :class:`SecureServer`'s.
    ``task_status.started`` receives the bound port (useful with ``port=0``)."""
    server = SecureServer(handler, **options)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener, anyio.create_task_group() as group:
        bound_port: int = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django

        async def serve_one(stream: anyio.abc.SocketStream) -> None:
            await server.serve(stream, group)

        for one in listener.listeners:
            group.start_soon(_accept_forever, one, group, serve_one)
        task_status.started(bound_port)


async def _accept_forever(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    group: anyio.abc.TaskGroup,
    serve_one: Callable[[anyio.abc.SocketStream], Coroutine[Any, Any, None]],
) -> None:
    """Accept connections and serve each in ``group``; wait out a shortage of
    descriptors or memory instead of ending (see "Serving" above)."""
    assert isinstance(listener, anyio.abc.SocketListener)  # what create_tcp_listener makes
    while True:
        try:
            stream = await listener.accept()
        except (OSError, anyio.BrokenResourceError) as error:
            # trio's backend reports the OSError as the cause of a
            # BrokenResourceError, asyncio's raises it as it is.
            shortage = _resource_shortage(error)
            if shortage is None:
                raise
        else:
            group.start_soon(serve_one, stream)
            continue
        _log.warning(
            "secure_channel.accept_failed", reason=shortage, duration_ms=_ACCEPT_RETRY_S * 1000
        )
        await anyio.sleep(_ACCEPT_RETRY_S)


def _resource_shortage(error: BaseException) -> str | None:
    """The errno name if ``error`` is accept() running out of resources."""
    cause = error if isinstance(error, OSError) else error.__cause__
    if isinstance(cause, OSError) and cause.errno in _ACCEPT_RESOURCE_ERRNOS:
        return errno.errorcode[cause.errno]
    return None
