"""The ingress's HTTPS endpoint: an ASGI app under hypercorn on trio, over TLS.

The TLS key is a fresh P-256 key born in memory at boot and never written:
the certificate (self-signed, SAN ``127.0.0.1`` and ``localhost`` by default)
is written as PEM where the daemon says (clients pin it), and its DER
SubjectPublicKeyInfo is what the node binds into its attestation document's
``user_data`` (:func:`protocol.attestation.tls_key_binding`), so a client
that verified the document knows the key it is talking to is the attested
node's. The key reaches OpenSSL through an anonymous in-memory file
(``memfd``), closed once loaded.

Hypercorn runs HTTP/1.1 (ALPN offers nothing else; a client that switches
to HTTP/2 anyway, by prior knowledge or ``Upgrade: h2c``, gets one stream at a
time and the application's 505), with bounded header sizes and these
deadlines: the request line and headers within the keep-alive timeout of the
connection's start (hypercorn's idle timer runs until a request's headers are
complete), the body within the application's body deadline, and every write
acknowledged within ``write_timeout_s`` (``TCP_USER_TIMEOUT``, inherited by
every accepted socket), so a client that stops reading cannot hold a
connection, its task or its buffered answer. There is deliberately no read
timeout while a request is served: a client waiting for its answer sends
nothing, and hypercorn's read timeout would end its request as a disconnect.
Its own access and error logging is replaced by fixed events in Mantle's JSON
pipeline (:mod:`actors.log`) that carry no request line, path, query or
message text. The application logs its own routes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from actors.log import exception_summary, get_logger

log = get_logger("nodes.https")

#: How long a boot's certificate is valid (the node makes a new one each boot).
CERT_VALIDITY: Final = datetime.timedelta(days=30)
DEFAULT_HOSTS: Final = ("127.0.0.1", "localhost")


@dataclasses.dataclass(frozen=True, slots=True)
class TlsIdentity:
    """This boot's TLS certificate and key (the key only inside ``ssl_context``)."""

    cert_pem: bytes
    #: DER SubjectPublicKeyInfo of the certificate's key (what the attestation binds).
    spki_der: bytes
    ssl_context: ssl.SSLContext = dataclasses.field(repr=False)


def generate_tls_identity(hosts: tuple[str, ...] = DEFAULT_HOSTS) -> TlsIdentity:
    """A fresh P-256 key and a self-signed certificate naming ``hosts``."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        address = None
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
        names.append(x509.IPAddress(address) if address is not None else x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mantle-ingress")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    spki_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(["http/1.1"])
    _load_chain_from_memory(context, cert_pem, key_pem)
    return TlsIdentity(cert_pem=cert_pem, spki_der=spki_der, ssl_context=context)


def _load_chain_from_memory(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` takes paths only: hand it anonymous memory files."""
    cert_fd = os.memfd_create("mantle-tls-cert", os.MFD_CLOEXEC)
    key_fd = os.memfd_create("mantle-tls-key", os.MFD_CLOEXEC)
    try:
        os.write(cert_fd, cert_pem)
        os.write(key_fd, key_pem)
        context.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}")
    finally:
        os.close(cert_fd)
        os.close(key_fd)


def write_cert_pem(path: Path, cert_pem: bytes) -> None:
    """Write the certificate atomically (a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert_pem)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True, slots=True)
class HttpsLimits:
    """Hypercorn's connection limits."""

    #: Bytes of a request line plus headers (h11's incomplete-event bound).
    max_header_bytes: int = 16 * 1024
    #: Seconds a connection may stay idle, and the bound on sending a request
    #: line and headers (hypercorn's idle timer runs from the connection's
    #: start until a request's headers are complete).
    keep_alive_timeout_s: float = 5.0
    #: Seconds sent data may stay unacknowledged (or unsent, against a zero
    #: window) before the kernel aborts the connection (``TCP_USER_TIMEOUT``).
    write_timeout_s: float = 30.0
    ssl_handshake_timeout_s: float = 10.0
    graceful_timeout_s: float = 5.0
    keep_alive_max_requests: int = 1000
    backlog: int = 128

    def __post_init__(self) -> None:
        # TCP_USER_TIMEOUT 0 is the kernel's default, i.e. no write deadline.
        if not 0.001 <= self.write_timeout_s <= 3600:
            raise ValueError("write_timeout_s must be in [0.001, 3600] seconds")
        if not (self.keep_alive_timeout_s > 0 and self.ssl_handshake_timeout_s > 0):
            raise ValueError("timeouts must be positive")


@dataclasses.dataclass(frozen=True, slots=True)
class HttpsEndpoint:
    """Where the server listens, and the certificate it presents."""

    host: str
    port: int
    cert_pem: bytes
    spki_der: bytes


class _JsonPipelineLogger:
    """Hypercorn's logger, reduced to fixed events: no access lines (the app
    logs its routes), server messages by level only, exceptions by type and
    location."""

    def __init__(self, config: Config) -> None:
        self.access_log_format = ""

    async def access(self, request: Any, response: Any, request_time: float) -> None:
        return None

    def _emit(self, level: str, kwargs: dict[str, Any]) -> None:
        fields: dict[str, Any] = {"state": level}
        exc_info = kwargs.get("exc_info")
        if isinstance(exc_info, BaseException):
            fields.update(exception_summary(exc_info))
        elif exc_info:
            import sys

            current = sys.exc_info()[1]
            if current is not None:
                fields.update(exception_summary(current))
        log.info("http_server_event", **fields)

    async def critical(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._emit("critical", kwargs)

    async def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._emit("error", kwargs)

    async def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._emit("warning", kwargs)

    async def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        return None

    async def debug(self, message: str, *args: Any, **kwargs: Any) -> None:
        return None

    async def exception(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._emit("exception", {"exc_info": True, **kwargs})

    async def log(self, level: int, message: str, *args: Any, **kwargs: Any) -> None:
        self._emit(str(level), kwargs)


def _config(identity: TlsIdentity, limits: HttpsLimits) -> Config:
    class _Config(Config):
        def create_ssl_context(self) -> ssl.SSLContext | None:
            return identity.ssl_context

    config = _Config()
    config.bind = []
    config.insecure_bind = []
    config.accesslog = None
    config.errorlog = None
    config.logger_class = _JsonPipelineLogger  # type: ignore[assignment]
    config.alpn_protocols = ["http/1.1"]
    config.h11_max_incomplete_size = limits.max_header_bytes
    config.keep_alive_timeout = limits.keep_alive_timeout_s
    config.keep_alive_max_requests = limits.keep_alive_max_requests
    # No read timeout: it would end a request whose client waits, silent, for
    # its answer (hypercorn reports it to the app as a disconnect). Headers
    # are bounded by the idle timer, bodies by the app's body deadline.
    config.read_timeout = None
    # Should a client switch to HTTP/2 (prior knowledge or h2c, which
    # hypercorn honours whatever ALPN said), one stream at a time and the
    # same header bound; the application answers it 505.
    config.h2_max_concurrent_streams = 1
    config.h2_max_header_list_size = limits.max_header_bytes
    config.ssl_handshake_timeout = limits.ssl_handshake_timeout_s
    config.graceful_timeout = limits.graceful_timeout_s
    config.include_server_header = False
    config.backlog = limits.backlog
    return config


async def serve_https(
    app: Callable[..., Awaitable[None]],
    *,
    identity: TlsIdentity,
    host: str = "127.0.0.1",
    port: int = 0,
    cert_path: Path | None = None,
    limits: HttpsLimits | None = None,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[HttpsEndpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over TLS on ``host:port`` (0 picks a port) until
    ``shutdown_trigger`` returns or the task is cancelled.

    Writes ``identity.cert_pem`` to ``cert_path`` (if given) before
    listening, then reports the bound :class:`HttpsEndpoint` through
    ``task_status``.
    """
    limits = limits or HttpsLimits()
    config = _config(identity, limits)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Inherited by every accepted socket: hypercorn's writes are shielded
        # and have no deadline of their own.
        sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(limits.write_timeout_s * 1000)
        )
        sock.bind((host, port))
        sock.setblocking(False)
        sock.listen(limits.backlog)
        bound_port = sock.getsockname()[1]
        if cert_path is not None:
            write_cert_pem(cert_path, identity.cert_pem)
    except BaseException:
        sock.close()
        raise
    endpoint = HttpsEndpoint(host, bound_port, identity.cert_pem, identity.spki_der)

    async with trio.open_nursery() as nursery:

        async def started_relay(
            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            await worker_serve(
                wrap_app(app, config.wsgi_max_body_size, "asgi"),
                config,
                sockets=Sockets(secure_sockets=[sock], insecure_sockets=[], quic_sockets=[]),
                shutdown_trigger=shutdown_trigger,
                task_status=task_status,  # type: ignore[arg-type]
            )

        await nursery.start(started_relay)
        log.info("https_listening", host=host, port=bound_port)
        task_status.started(endpoint)
