"""The ingress room: the HTTPS front door of a cluster.

Duties:

* **An OpenAI-compatible API** (``GET /v1/models``,
  ``POST /v1/chat/completions``, ``POST /v1/responses``, server-sent-event
  streaming, OpenAI error bodies and status codes) in :func:`create_app`, an
  ASGI application over a :class:`~actors.scheduler.Dispatcher`;
  ``nodes.https`` serves it with hypercorn on trio, over TLS whose key is born
  at boot and bound into this node's attestation
  (:func:`protocol.attestation.tls_key_binding`). Validation and rendering are
  the pure :mod:`protocol.openai`.
* **Tenants** (:class:`TenantStore`, from ``tenants.toml``): API keys stored
  as SHA-256 digests, a bearer key compared with every tenant's digest in
  constant time, checked before any body is read.
* **Limits, answered, never a reset**: header count and size (431), content
  type (415), body size (413: a body up to ``max_discard_bytes`` is read and
  dropped so the uploading client receives the answer), the body's read
  deadline (408, against slow bodies), messages, text sizes and tokens (400),
  a 400 naming every parameter Mantle does not support, 505 for anything but
  HTTP/1.x (hypercorn switches to HTTP/2 on prior knowledge or h2c whatever
  ALPN offered). Admission errors map
  to 404 (unknown model), 429 with ``Retry-After`` (overloaded) and 503 (no
  capacity).
* **Every admitted request ends** with an answer or an explicit error (I7):
  a stream that fails after it started ends with an error event; a request
  past its deadline answers 504 or ends its stream so; a client that goes
  away closes its submission (cancelling it on the node).
* ``GET /v1/attestation?nonce=HEX`` (32 to 64 bytes): this node's fresh
  document, as JSON ``{"document": base64, "nonce": hex, "tls_key_binding":
  hex, "tls_spki_sha256": hex}``, at most ``max_concurrent_attestations`` at
  once (429 beyond); ``GET /healthz``; the transparency log's read API under
  ``/ct/v1/`` (the injected sub-application). These need no API key.

* **The end-to-end path** (the Mantle client; tenant key required):
  ``GET /v1/mantle/nodes?model=M&nonce=HEX`` -- fresh documents over the
  client's nonce of the nodes serving ``M``, fetched through the scheduler
  over the attested links (``Dispatcher.node_documents``: at most 16, each
  node within its timeout, failures left out), as ``{"nodes": [{"node",
  "document": base64, "kind"}]}``, at most ``max_concurrent_attestations``
  listings at once (429 beyond); ``GET /v1/mantle/release`` -- the bundle
  this node booted (:class:`ReleaseFiles`: ``{"root.json",
  "targets.json", "log-proof.json"}``, base64), for the client to check
  against its own pins; ``POST /v1/mantle/chat`` -- a
  :class:`~protocol.e2e.SealedRequest` (``application/vnd.mantle.e2e+msgpack``,
  at most ``MAX_SEALED_REQUEST_BYTES``), of which the ingress reads the
  routing fields only, answered with the node's sealed records as they come
  (:mod:`protocol.e2e_stream` framing); refusals as for chat (401, 404, 413,
  415, 429, 503), and 409 for a request id submitted before.

Mantle keeps no conversation state (``store: true`` and
``previous_response_id`` are refused). Customer text stays in
:class:`~protocol.customer_data.CustomerData` until it is rendered into
response bytes; log lines carry the route, status, tenant and duration only.
"""

from actors.ingress._app import (
    CT_PREFIX,
    MAX_NONCE_BYTES,
    MIN_NONCE_BYTES,
    ASGIApp,
    AttestationSource,
    IngressApp,
    IngressLimits,
    ReleaseFiles,
    create_app,
)
from actors.ingress._tenants import (
    MAX_API_KEY_BYTES,
    Tenant,
    TenantCheck,
    TenantStore,
    TenantStoreError,
    api_key_digest,
)

__all__ = [
    "CT_PREFIX",
    "MAX_API_KEY_BYTES",
    "MAX_NONCE_BYTES",
    "MIN_NONCE_BYTES",
    "ASGIApp",
    "AttestationSource",
    "IngressApp",
    "IngressLimits",
    "ReleaseFiles",
    "Tenant",
    "TenantCheck",
    "TenantStore",
    "TenantStoreError",
    "api_key_digest",
    "create_app",
]
