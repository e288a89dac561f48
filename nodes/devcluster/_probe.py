"""Is the ingress serving? ``GET /v1/models`` over TLS, trusting only the ingress's own cert.

A probe runs in a worker thread (the standard library's blocking client, one
short request with a timeout) and answers yes only when the listing names the
model and, when the entry says how many inference nodes serve it
(``nodes``), at least the number started.
"""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Final

from nodes.devcluster._config import LOOPBACK

PROBE_TIMEOUT_S: Final = 5.0
MAX_LISTING_BYTES: Final = 1 << 20


def tls_context_for(cert: Path) -> ssl.SSLContext:
    """A client context that trusts ``cert`` alone (the ingress's self-signed cert)."""
    return ssl.create_default_context(cafile=str(cert))


def models_listing(port: int, cert: Path, api_key: str) -> object | None:
    """The decoded ``GET /v1/models`` body, or ``None`` if it is not (yet) a 200 JSON answer."""
    connection = http.client.HTTPSConnection(
        LOOPBACK, port, context=tls_context_for(cert), timeout=PROBE_TIMEOUT_S
    )
    try:
        connection.request("GET", "/v1/models", headers={"Authorization": f"Bearer {api_key}"})
        response = connection.getresponse()
        body = response.read(MAX_LISTING_BYTES + 1)
        status = response.status
    except (OSError, http.client.HTTPException):
        # Not listening yet, the handshake failed, or the answer broke off:
        # the ingress is not serving (yet); the caller keeps polling.
        return None
    finally:
        connection.close()
    if status != 200 or len(body) > MAX_LISTING_BYTES:
        return None
    try:
        listing: object = json.loads(body)
    except ValueError:
        return None
    return listing


def lists_model(listing: object, model_id: str, nodes: int) -> bool:
    """Whether an OpenAI model listing names ``model_id`` served by ``nodes`` nodes."""
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        return False
    for entry in listing["data"]:
        if isinstance(entry, dict) and entry.get("id") == model_id:
            serving = entry.get("nodes")
            if serving is None:
                return True
            return isinstance(serving, int) and not isinstance(serving, bool) and serving >= nodes
    return False


def serves_model(port: int, cert: Path, api_key: str, model_id: str, nodes: int) -> bool:
    listing = models_listing(port, cert, api_key)
    return listing is not None and lists_model(listing, model_id, nodes)
