"""An HTTPS server of the operator's, for attacks on ``mantle.verify_ingress``.

Whoever runs the cluster hands the client the certificate to pin, so the
server at the other end of a pinned connection may be the operator's own:
:func:`hostile_https` serves TLS with a fresh certificate (``cert_pem``, what
the client is handed) and answers every request with whatever ``answer``
writes on the raw stream -- an endless body, a slow drip, a deep JSON, a
relayed document. It is a plain trio server on the loopback, no HTTP library
in between, so nothing tidies the answer up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx2
import trio
from _ingress_attestation import BootedIngress, client_pins

from mantle import VerifiedIngress, pinned_tls_context, verify_ingress
from nodes.https import generate_tls_identity
from nodes.random import SystemRandom

#: ``(the request's nonce, or None; the stream to write the answer on)``.
Answer = Callable[[bytes | None, trio.abc.Stream], Awaitable[None]]

_MAX_HEAD = 16 * 1024


@dataclass
class HostileServer:
    url: str
    cert_pem: bytes
    spki_der: bytes
    #: Request lines received, in order.
    requests: list[bytes] = field(default_factory=list)
    #: Body bytes the answers managed to write (``sent``) in all.
    sent: int = 0


async def _read_head(stream: trio.abc.Stream) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head and len(head) < _MAX_HEAD:
        data = await stream.receive_some(4096)
        if not data:
            break
        head += data
    return head


def _nonce_of(request_line: bytes) -> bytes | None:
    parts = request_line.split(b" ")
    if len(parts) < 2:
        return None
    values = parse_qs(urlsplit(parts[1].decode("latin-1")).query).get("nonce")
    return bytes.fromhex(values[0]) if values else None


@asynccontextmanager
async def hostile_https(answer: Answer, *, tls: bool = True) -> AsyncIterator[HostileServer]:
    """The server, for as long as the context lasts (``tls=False``: plain HTTP)."""
    identity = generate_tls_identity()
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    scheme = "https" if tls else "http"
    server = HostileServer(f"{scheme}://127.0.0.1:{port}", identity.cert_pem, identity.spki_der)

    async def handle(raw: trio.SocketStream) -> None:
        stream: trio.abc.Stream = (
            trio.SSLStream(raw, identity.ssl_context, server_side=True) if tls else raw
        )
        try:
            head = await _read_head(stream)
            line = head.split(b"\r\n", 1)[0]
            server.requests.append(line)
            await answer(_nonce_of(line), _Counting(stream, server))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up: that is what a refusing client does
        finally:
            with trio.move_on_after(1):
                await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, [listener])
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


class _Counting(trio.abc.Stream):
    """The TLS stream, counting what the answer wrote."""

    def __init__(self, inner: trio.abc.Stream, server: HostileServer) -> None:
        self._inner = inner
        self._server = server

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)
        self._server.sent += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def verify_against(
    node: BootedIngress,
    server: HostileServer,
    *,
    cert_pem: bytes | None = None,
    **options: float,
) -> VerifiedIngress:
    """``mantle.verify_ingress`` of ``server``, the client pinning ``cert_pem``
    (default: the server's own certificate, as the operator handed it over)
    and trusting ``node``'s PKI and release."""
    pinned = cert_pem if cert_pem is not None else server.cert_pem
    async with httpx2.AsyncClient(verify=pinned_tls_context(pinned), timeout=5) as http:
        return await verify_ingress(
            http,
            server.url,
            pins=client_pins(node),
            release=node.release,
            tls_cert_pem=pinned,
            random=SystemRandom(),
            clock=node.clock,
            **options,
        )


def head(status: str = "200 OK", *headers: str) -> bytes:
    """A response head: status line, ``headers``, blank line."""
    lines = [f"HTTP/1.1 {status}", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")
