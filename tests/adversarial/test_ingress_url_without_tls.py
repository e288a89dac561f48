"""Attack: the operator hands the client an ``http://`` URL and relays the genuine document.

The client pins the genuine ingress's certificate, and the document the
operator's plain-HTTP server relays is genuine: the right root and release,
the client's own nonce, the pinned key bound. If ``verify_ingress`` accepted
the URL, the ``VerifiedIngress`` it returns would name a URL no TLS (and so
no pin) protects, and a client sending its prompts to ``verified.url`` would
send them in the clear to the operator. Only ``https://`` is checked.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import trio
from _hostile_ingress import head, hostile_https, verify_against
from _ingress_attestation import boot_ingress

from mantle import IngressCheck, IngressRefused
from nodes.https import generate_tls_identity


def test_a_plain_http_url_is_refused_before_anything_is_asked(tmp_path: Path) -> None:
    node = boot_ingress(tmp_path)
    genuine = generate_tls_identity()

    async def relay(nonce: bytes | None, stream: trio.abc.Stream) -> None:
        assert nonce is not None
        body = json.dumps(
            {"document": base64.b64encode(node.document(nonce, genuine.spki_der)).decode()}
        ).encode()
        await stream.send_all(
            head("200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}") + body
        )

    async def run() -> tuple[IngressRefused | None, list[bytes]]:
        async with hostile_https(relay, tls=False) as server:
            try:
                await verify_against(node, server, cert_pem=genuine.cert_pem)
            except IngressRefused as refused:
                return refused, server.requests
            return None, server.requests

    refused, requests = trio.run(run)
    assert refused is not None and refused.check is IngressCheck.URL
    assert requests == []
