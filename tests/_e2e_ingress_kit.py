"""A Mantle ingress in a box, for the client's tests: the ``/v1/mantle/*`` and
``/ct/v1/*`` routes as one ASGI app over real parts.

* a real release (``ReleaseKit``: TUF metadata signed by real keys, a real
  transparency log, served by the real ``nodes.tlog.TlogHttpApp``);
* inference nodes booted from it by ``nodes.boot.measured_boot`` on simulated
  NitroTPMs, each with its Noise static key in key custody and an Ed25519
  receipt key born in memory, its binding in the ``user_data`` of every
  document the node makes;
* ``POST /v1/mantle/chat`` placing the sealed request on a node whose
  binding an envelope names; that node opens it (``protocol.e2e.open_request``),
  answers (a scripted reply of the prompt's length), seals each chunk and the
  final record with a receipt signed by its receipt key.

Everything relayed (request bodies and answer frames) is kept in
:attr:`E2EIngress.relayed`, so a test can search it for a canary. Knobs let a
test play the operator: rewrite the nodes answer, the tree head, the answer's
records, or answer with documents over another nonce.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx2
from _release_kit import NOW, ReleaseKit
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from actors.key_custody import NodeKeyCustody
from nodes.boot import measured_boot
from nodes.random import SystemRandom
from nodes.release import ReleaseFiles
from nodes.tlog import TlogHttpApp
from protocol.attestation import TrustAnchor, noise_key_binding
from protocol.customer_data import CustomerData
from protocol.e2e import (
    RESPONSE_SALT_SIZE,
    E2EError,
    ResponseSealer,
    SealedRequest,
    open_request,
    receipt_key_binding,
    request_digest,
    response_digest,
    sign_receipt,
)
from protocol.e2e_stream import STREAM_MEDIA_TYPE, error_frame, record_frame
from protocol.inference import FinishReason, GenerateChunk, GenerateDone
from protocol.measurement import release_measurement
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

MODEL = "smol"
WEIGHTS = b"GGUF" + bytes(2048)
API_KEY = "mk-e2e-test-0123456789abcdef"
URL = "https://ingress.test"
NOW_MS = int(NOW.timestamp() * 1000)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def pem_of_root(pki: SimulatedNitroPKI) -> bytes:
    from cryptography import x509

    return x509.load_der_x509_certificate(pki.root_der).public_bytes(Encoding.PEM)


@dataclass
class InferenceNode:
    name: str
    tpm: SimulatedNitroTPM
    custody: NodeKeyCustody
    receipt_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def receipt_public(self) -> bytes:
        return self.receipt_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def document(self, nonce: bytes) -> bytes:
        return self.custody.attest(
            self.tpm, nonce=nonce, user_data=receipt_key_binding(self.receipt_public)
        )


def reply_for(prompt_chars: int) -> list[str]:
    """The scripted answer: its text depends on the request it answers."""
    return ["The prompt ", f"had {prompt_chars} ", "characters."]


class E2EIngress:
    """See the module docstring."""

    def __init__(
        self, tmp: Path, *, nodes: int = 2, pki_seed: str = "e2e-cloud", version: int = 1
    ) -> None:
        self.kit = ReleaseKit(install_root=tmp / "install")
        self.files: ReleaseFiles = self.kit.publish(version, models={MODEL: WEIGHTS})
        self.release = self.kit.verified(self.files)
        self.clock = ManualClock(NOW_MS)
        self.pki = SimulatedNitroPKI(pki_seed)
        self.nodes: list[InferenceNode] = []
        for index in range(nodes):
            tpm = SimulatedNitroTPM(seed=f"inference-{index}", pki=self.pki, clock=self.clock)
            booted = measured_boot(
                self.kit.boot_inputs(self.files, MODEL, self.kit.node_state_dir(tpm)),
                tpm=tpm,
                random=SystemRandom(),
                now=NOW,
            )
            self.nodes.append(InferenceNode(f"inference-{index}", tpm, booted.custody))
        assert self.kit.log is not None
        self.tlog = TlogHttpApp(self.kit.log)
        self.relayed: list[bytes] = []
        self.nonces: list[bytes] = []
        self.requests: list[str] = []
        #: Rewrites the nodes answer's entries before it is sent.
        self.rewrite_nodes: Callable[[list[dict[str, object]], bytes], list[dict[str, object]]] = (
            lambda entries, nonce: entries
        )
        #: Rewrites the records of an answer before they are framed.
        self.rewrite_records: Callable[[list[bytes]], list[bytes]] = lambda records: records
        #: Replaces ``get-sth`` (a test playing a forked log).
        self.sth_override: dict[str, object] | None = None
        self.chat_status: tuple[int, dict[str, str], bytes] | None = None
        #: The node signs its receipt with this key instead of its attested one.
        self.receipt_key_override: Ed25519PrivateKey | None = None
        #: The node signs its receipt over this text instead of what it sent.
        self.receipt_text_override: str | None = None
        #: The answer fails after this many records (an error frame follows them).
        self.fail_after_records: int | None = None

    # -- what a client pins -------------------------------------------------------------

    def pin_files(self, where: Path) -> dict[str, Path]:
        where.mkdir(parents=True, exist_ok=True)
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        log_pem = Ed25519PublicKey.from_public_bytes(self.kit.log_public_key).public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
        paths = {
            "attestation_root": where / "attestation-root.pem",
            "release_root": where / "release-root.json",
            "tlog_key": where / "log-key.pub.pem",
        }
        paths["attestation_root"].write_bytes(pem_of_root(self.pki))
        paths["release_root"].write_bytes(self.kit.root)
        paths["tlog_key"].write_bytes(log_pem)
        return paths

    def anchor(self) -> TrustAnchor:
        return TrustAnchor.from_der(self.pki.root_der)

    def transport(self) -> httpx2.AsyncBaseTransport:
        return httpx2.ASGITransport(app=self)

    def client_arguments(self, tmp: Path) -> dict[str, object]:
        pins = self.pin_files(tmp / "pins")
        return {
            "url": URL,
            "api_key": API_KEY,
            **{name: str(path) for name, path in pins.items()},
            "trust_state": str(tmp / "state" / "trust-state.json"),
            "transport": self.transport(),
            "clock": self.clock,
            "random": SystemRandom(),
        }

    # -- the routes ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        self.requests.append(path)
        if path.startswith("/ct/v1/"):
            if path == "/ct/v1/get-sth" and self.sth_override is not None:
                await _reply(send, 200, json.dumps(self.sth_override).encode())
                return
            await self.tlog(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if headers.get(b"authorization") != f"Bearer {API_KEY}".encode():
            await _reply(send, 401, b'{"error": {"message": "bad key", "type": "auth"}}')
            return
        query = parse_qs(scope.get("query_string", b"").decode())
        if path == "/v1/mantle/release":
            body = {
                "root.json": base64.b64encode(self.files.root).decode(),
                "targets.json": base64.b64encode(self.files.targets).decode(),
                "log-proof.json": base64.b64encode(self.files.log_proof).decode(),
            }
            await _reply(send, 200, json.dumps(body).encode())
        elif path == "/v1/mantle/nodes":
            nonce = bytes.fromhex(query["nonce"][0])
            self.nonces.append(nonce)
            entries: list[dict[str, object]] = [
                {
                    "node": node.name,
                    "document": base64.b64encode(node.document(nonce)).decode(),
                    "kind": "nitro",
                    "static_key": base64.b64encode(node.custody.static_public).decode(),
                }
                for node in self.nodes
                if query.get("model") == [MODEL]
            ]
            entries = self.rewrite_nodes(entries, nonce)
            await _reply(send, 200, json.dumps({"nodes": entries}).encode())
        elif path == "/v1/mantle/chat":
            await self._chat(receive, send)
        else:
            await _reply(send, 404, b'{"error": {"message": "no such route"}}')

    async def _chat(self, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.relayed.append(bytes(body))
        if self.chat_status is not None:
            status, headers, payload = self.chat_status
            await _reply(send, status, payload, headers)
            return
        sealed = SealedRequest.decode(bytes(body))
        node = next(
            (
                n
                for n in self.nodes
                if sealed.addressed_to(noise_key_binding(n.custody.static_public))
            ),
            None,
        )
        if node is None:
            await _reply(send, 503, b'{"error": {"message": "no candidate node"}}')
            return
        try:
            request, key = open_request(sealed, static=node.custody.static)
        except E2EError:
            await _reply(send, 502, b'{"error": {"message": "the node refused the request"}}')
            return
        prompt_chars = sum(len(turn.content.reveal_text()) for turn in request.turns)
        salt = SystemRandom().token_bytes(RESPONSE_SALT_SIZE)
        sealer = ResponseSealer(key, sealed.request_id, salt=salt)
        pieces = reply_for(prompt_chars)[: request.max_tokens]
        records = [sealer.seal_chunk(GenerateChunk(CustomerData(p), 1)) for p in pieces]
        reason = FinishReason.LENGTH if len(pieces) == request.max_tokens else FinishReason.STOP
        done = GenerateDone(reason, len(pieces), prompt_chars)
        signed_digest = sealer.response_sha256(done)
        if self.receipt_text_override is not None:
            signed_digest = response_digest(self.receipt_text_override, done, salt=salt)
        receipt = sign_receipt(
            self.receipt_key_override or node.receipt_key,
            request_id=sealed.request_id,
            request_sha256=request_digest(sealed.request_id, request),
            response_sha256=signed_digest,
            model=request.model,
            model_sha384=release_measurement(self.release, request.model).model_digest,
            release_version=self.release.version,
        )
        records.append(sealer.seal_final(done, receipt))
        records = self.rewrite_records(records)
        framed = b"".join(record_frame(r) for r in records[: self.fail_after_records])
        if self.fail_after_records is not None:
            framed += error_frame(
                b'{"error": {"message": "the node was lost", "type": "server_error"}}'
            )
        self.relayed.append(framed)
        await _reply(send, 200, framed, {"content-type": STREAM_MEDIA_TYPE})


async def _reply(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items() if k != "content-type"]
    if headers and "content-type" in headers:
        raw[0] = (b"content-type", headers["content-type"].encode())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
