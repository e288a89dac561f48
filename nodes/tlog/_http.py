"""Read-only HTTP view of the transparency log in the shape of RFC 6962 §4.

Routes (GET only), under a prefix that defaults to ``/ct/v1/``:

* ``get-sth`` -> ``{tree_size, timestamp, sha256_root_hash, tree_head_signature}``
* ``get-sth-consistency?first=&second=`` -> ``{consistency: [b64...]}``
* ``get-proof-by-hash?hash=&tree_size=`` -> ``{leaf_index, audit_path: [b64...]}``
* ``get-entries?start=&end=`` (inclusive) -> ``{entries: [{leaf_input, extra_data}]}``,
  at most ``max_entries`` per reply (RFC 6962 lets a log return fewer).

Binary fields are standard base64. A bad query (missing, repeated or unknown
parameter, non-decimal or out-of-range number, bad base64, unknown leaf)
answers 400 with ``{"success": false, "error_message": ...}``; the message
states which check failed and never echoes request text (at most a number the
query parsed to). Unknown paths answer
404, other methods 405.

Store lookups run in a worker thread so a slow disk never stalls the event
loop that also serves inference traffic when the ingress mounts this app.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote

import anyio.to_thread

from nodes.tlog._log import LogRequestError, TransparencyLog
from protocol.tlog import HASH_SIZE, MAX_TREE_SIZE, TlogError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_PREFIX = "/ct/v1/"
MAX_QUERY_STRING = 512
_DECIMAL = re.compile(r"[0-9]{1,19}")


class BadQuery(Exception):
    """The query string breaks a rule; the message names which."""


def _parse_query(raw: bytes, allowed: frozenset[str]) -> dict[str, str]:
    # Checked, or raised outside the handler: a UnicodeDecodeError holds the
    # bytes it failed on, and no BadQuery may keep it in __context__.
    if len(raw) > MAX_QUERY_STRING:
        raise BadQuery("query string too long")
    if not raw.isascii():
        raise BadQuery("query string is not ASCII")
    text = raw.decode("ascii")
    params: dict[str, str] = {}
    for part in text.split("&") if text else []:
        name, sep, value = part.partition("=")
        if not sep:
            raise BadQuery("query parameter without a value")
        decoded: tuple[str, str] | None = None
        with contextlib.suppress(UnicodeDecodeError):
            # unquote, not unquote_plus: '+' is a base64 character here.
            decoded = unquote(name, errors="strict"), unquote(value, errors="strict")
        if decoded is None:
            raise BadQuery("query parameter is not valid percent-encoding")
        name, value = decoded
        if name not in allowed:
            raise BadQuery("unknown query parameter")
        if name in params:
            raise BadQuery(f"parameter {name} given more than once")
        params[name] = value
    missing = allowed - set(params)
    if missing:
        raise BadQuery(f"missing parameter {sorted(missing)[0]}")
    return params


def _decimal(params: Mapping[str, str], name: str) -> int:
    value = params[name]
    if not _DECIMAL.fullmatch(value) or int(value) > MAX_TREE_SIZE:
        raise BadQuery(f"{name} is not a non-negative decimal integer in range")
    return int(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class TlogHttpApp:
    """ASGI application serving a :class:`TransparencyLog` read-only."""

    def __init__(
        self, log: TransparencyLog, *, prefix: str = DEFAULT_PREFIX, max_entries: int = 256
    ) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError("prefix must start and end with '/'")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._log = log
        self._prefix = prefix
        self._max_entries = max_entries
        self._routes: dict[str, tuple[frozenset[str], Callable[[dict[str, str]], object]]] = {
            "get-sth": (frozenset(), self._get_sth),
            "get-sth-consistency": (frozenset({"first", "second"}), self._get_consistency),
            "get-proof-by-hash": (frozenset({"hash", "tree_size"}), self._get_proof_by_hash),
            "get-entries": (frozenset({"start", "end"}), self._get_entries),
        }

    # -- handlers (run in a worker thread) -----------------------------------------

    def _get_sth(self, _: dict[str, str]) -> object:
        return self._log.sth().to_json_dict()

    def _get_consistency(self, params: dict[str, str]) -> object:
        first, second = _decimal(params, "first"), _decimal(params, "second")
        if first > second:
            raise BadQuery("first is greater than second")
        return {"consistency": [_b64(h) for h in self._log.consistency_proof(first, second)]}

    def _get_proof_by_hash(self, params: dict[str, str]) -> object:
        text = params["hash"]
        wanted: bytes | None = None
        if text.isascii():
            with contextlib.suppress(binascii.Error):
                wanted = base64.b64decode(text.encode("ascii"), validate=True)
        if wanted is None:
            raise BadQuery("hash is not valid base64")
        if len(wanted) != HASH_SIZE:
            raise BadQuery("hash is not a 32-byte leaf hash")
        proof = self._log.inclusion_proof(wanted, _decimal(params, "tree_size"))
        return {"leaf_index": proof.leaf_index, "audit_path": [_b64(h) for h in proof.audit_path]}

    def _get_entries(self, params: dict[str, str]) -> object:
        start, end = _decimal(params, "start"), _decimal(params, "end")
        if start > end:
            raise BadQuery("start is greater than end")
        size = self._log.size
        if start >= size:
            raise BadQuery("start is beyond the log's size")
        end = min(end, size - 1, start + self._max_entries - 1)
        entries = self._log.entries(start, end)
        return {"entries": [{"leaf_input": _b64(e), "extra_data": ""} for e in entries]}

    # -- ASGI ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        name = path[len(self._prefix) :] if path.startswith(self._prefix) else None
        route = self._routes.get(name) if name is not None else None
        if route is None:
            await self._reply(send, 404, {"success": False, "error_message": "no such endpoint"})
            return
        if scope.get("method") != "GET":
            await self._reply(
                send,
                405,
                {"success": False, "error_message": "only GET is served"},
                extra_headers=[(b"allow", b"GET")],
            )
            return
        allowed, handler = route
        status, body = await anyio.to_thread.run_sync(
            self._handle, handler, allowed, scope.get("query_string", b"")
        )
        await self._reply(send, status, body)

    @staticmethod
    def _handle(
        handler: Callable[[dict[str, str]], object], allowed: frozenset[str], raw_query: bytes
    ) -> tuple[int, object]:
        try:
            params = _parse_query(raw_query if isinstance(raw_query, bytes) else b"", allowed)
            return 200, handler(params)
        except (BadQuery, LogRequestError) as exc:
            return 400, {"success": False, "error_message": str(exc)}
        except TlogError as exc:
            # The store itself failed: say so by type, without internals.
            return 503, {
                "success": False,
                "error_message": f"log unavailable ({type(exc).__name__})",
            }

    @staticmethod
    async def _reply(
        send: Send,
        status: int,
        body: object,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode("ascii")),
            (b"cache-control", b"no-store"),
            *(extra_headers or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
