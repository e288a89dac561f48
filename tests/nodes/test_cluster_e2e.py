"""The end-to-end routes against the real development cluster (a keys node, an
ingress node and two inference nodes, each a ``mantle-node run`` process on a
simulated NitroTPM, serving the scripted engine), with ``protocol.e2e`` as
the client: the release the ingress booted, verified against the cluster's
pins; the inference nodes' documents over the client's nonce, verified
(chain, nonce, PCRs of that release, the static key's binding); a request
sealed to those keys, answered with sealed records the client opens, and a
receipt signed by the key the serving node's document binds, naming the
release's model digest and version. A canary prompt and its completion
appear nowhere the ingress could see them: not in the bytes it was sent, not
in the bytes it relayed, not in its log. Refusals: 401, 404, 409, 413, 415,
400. Every wait has a generous bound.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import httpx2
import pytest

from mantle import ReleaseDirectory, client_release_view, load_pins
from mantle.trust_state import TrustStateFile
from nodes.devcluster import INGRESS_NODE, DevCluster, DevClusterSettings, EngineKind
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    noise_key_binding,
)
from protocol.customer_data import CustomerData
from protocol.e2e import (
    RequestBody,
    ResponseOpener,
    SealedRequest,
    receipt_key_binding,
    request_digest,
    seal_request,
)
from protocol.e2e_stream import (
    ERROR_FRAME,
    RECORD_FRAME,
    SEALED_REQUEST_MEDIA_TYPE,
    STREAM_MEDIA_TYPE,
    StreamDecoder,
)
from protocol.inference import ChatTurn, FinishReason, GenerateChunk, GenerateRequest, Role
from protocol.measurement import cluster_policy, model_artifact_name
from protocol.release import VerifiedRelease

START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 60.0
MODEL = "scripted"
CANARY = "CANARY-e2e-5b19 the lighthouse keeper's secret"


@dataclass
class Cluster:
    cluster: DevCluster
    http: httpx2.Client
    release: VerifiedRelease

    def get(self, path: str, api_key: str | None = None) -> httpx2.Response:
        key = api_key if api_key is not None else self.cluster.api_key
        return self.http.get(self.cluster.url + path, headers={"authorization": f"Bearer {key}"})

    def post(self, body: bytes, *, media_type: str = SEALED_REQUEST_MEDIA_TYPE) -> httpx2.Response:
        return self.http.post(
            self.cluster.url + "/v1/mantle/chat",
            content=body,
            headers={
                "authorization": f"Bearer {self.cluster.api_key}",
                "content-type": media_type,
            },
        )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("e2e-cluster")
    settings = DevClusterSettings(
        data_dir=work / "dev",
        port=0,
        inference_nodes=2,
        engine=EngineKind.SCRIPTED,
        token_interval_s=0.01,
        startup_timeout_s=START_TIMEOUT_S,
    )
    cluster = DevCluster(settings)
    started = time.monotonic()
    try:
        anyio.run(cluster.start, backend="trio")
        assert time.monotonic() - started < START_TIMEOUT_S
        context = ssl.create_default_context(cafile=str(cluster.tls_cert))
        with httpx2.Client(verify=context, timeout=REQUEST_TIMEOUT_S) as http:
            answer = http.get(
                cluster.url + "/v1/mantle/release",
                headers={"authorization": f"Bearer {cluster.api_key}"},
            )
            assert answer.status_code == 200
            bundle = ReleaseDirectory(work / "served-release")
            bundle.path.mkdir()
            for name, data in answer.json().items():
                (bundle.path / name).write_bytes(base64.b64decode(data))
            pins = load_pins(cluster.attestation_root.parent)
            release = client_release_view(
                bundle, pins, datetime.now(UTC), TrustStateFile(work / "trust.json")
            )
            yield Cluster(cluster, http, release)
    finally:
        anyio.run(cluster.stop, backend="trio")


def verified_nodes(running: Cluster) -> list[dict[str, object]]:
    """The nodes' documents over a fresh nonce, each verified as a client does."""
    nonce = bytes(range(32))
    answer = running.get(f"/v1/mantle/nodes?model={MODEL}&nonce={nonce.hex()}")
    assert answer.status_code == 200, answer.text
    pins = load_pins(running.cluster.attestation_root.parent)
    verifier = AttestationVerifier([NitroAuthenticator(pins.attestation_root)])
    nodes = []
    for entry in answer.json()["nodes"]:
        static = base64.b64decode(entry["static_key"])
        assert entry["kind"] == "nitro"
        verified = verifier.verify(
            base64.b64decode(entry["document"]),
            kind=DocumentKind.NITRO,
            expectations=Expectations(
                pcr_policy=cluster_policy([running.release]),
                expected_nonce=nonce,
                expected_public_key=noise_key_binding(static),
            ),
            now_ms=int(time.time() * 1000),
        )
        nodes.append({"name": entry["node"], "static": static, "verified": verified})
    return nodes


def canary_request(max_tokens: int = 12) -> GenerateRequest:
    return GenerateRequest(
        MODEL, (ChatTurn(Role.USER, CustomerData(CANARY)),), max_tokens, 0.0, 1.0, 7
    )


def frames_of(body: bytes) -> list[tuple[int, bytes]]:
    decoder = StreamDecoder()
    frames = decoder.feed(body)
    decoder.close()
    return frames


def test_the_release_served_is_the_one_the_pins_verify(running: Cluster) -> None:
    assert running.release.version == 1
    assert model_artifact_name(MODEL) in running.release.artifacts


def test_a_sealed_request_is_answered_and_its_receipt_verifies(running: Cluster) -> None:
    nodes = verified_nodes(running)
    assert len(nodes) == 2
    req = canary_request()
    sealed, key = seal_request(
        RequestBody.of(req),
        model=MODEL,
        max_tokens=req.max_tokens,
        candidates=[node["static"] for node in nodes],  # type: ignore[misc]
        entropy=os.urandom,
    )
    body = sealed.encode()
    answer = running.post(body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == STREAM_MEDIA_TYPE
    frames = frames_of(answer.content)
    assert frames and all(kind == RECORD_FRAME for kind, _ in frames)
    opener = ResponseOpener(
        key, sealed.request_id, request_sha256=request_digest(sealed.request_id, req)
    )
    text = ""
    for _kind, record in frames:
        content = opener.open(record)
        if isinstance(content, GenerateChunk):
            text += content.text.reveal_text()
    final = opener.finish()
    assert text and final.done.finish_reason in (FinishReason.LENGTH, FinishReason.STOP)
    receipt = final.receipt
    serving = [
        node
        for node in nodes
        if node["verified"].claims.user_data == receipt_key_binding(receipt.receipt_key)  # type: ignore[attr-defined]
    ]
    assert len(serving) == 1, "the receipt key is bound by exactly one verified node"
    spec = running.release.artifacts[model_artifact_name(MODEL)]
    assert receipt.model_sha384 == spec.hashes["sha384"]
    assert receipt.release_version == running.release.version
    assert receipt.request_id == sealed.request_id

    # Nothing the ingress was sent or relayed holds the prompt or the answer,
    # and nothing it logged does.
    for secret in (CANARY.encode(), text.encode()):
        assert secret not in body and secret not in answer.content
    logs = list(running.cluster.layout.node_dir(INGRESS_NODE).glob("*.log"))
    give_up = time.monotonic() + 10.0  # the request's line is written as it ends
    while not any(b"/v1/mantle/chat" in log.read_bytes() for log in logs):
        assert time.monotonic() < give_up, "the ingress never logged the request"
        time.sleep(0.05)
    for log in logs:
        seen = log.read_bytes()
        assert CANARY.encode() not in seen and text.encode() not in seen

    # The same sealed request again is a replay: refused, never answered twice.
    replay = running.post(body)
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "request_replayed"


def test_refusals_before_the_stream(running: Cluster) -> None:
    nodes = verified_nodes(running)
    statics = [node["static"] for node in nodes]

    def sealed_for(model: str) -> SealedRequest:
        return seal_request(
            RequestBody.of(canary_request()),
            model=model,
            max_tokens=4,
            candidates=statics,  # type: ignore[arg-type]
            entropy=os.urandom,
        )[0]

    assert running.get("/v1/mantle/release", api_key="not-a-key").status_code == 401
    nonce = "00" * 32
    assert running.get(f"/v1/mantle/nodes?model={MODEL}&nonce={nonce}", "x").status_code == 401
    assert running.get(f"/v1/mantle/nodes?model=nope&nonce={nonce}").status_code == 404
    assert running.get(f"/v1/mantle/nodes?model={MODEL}&nonce=00").status_code == 400
    unknown = running.post(sealed_for("no-such-model").encode())
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert (
        running.post(sealed_for(MODEL).encode(), media_type="application/json").status_code == 415
    )
    assert running.post(b"\x93not a sealed request").status_code == 400
    too_large = running.post(b"\x00" * (2 * 1024 * 1024))
    assert too_large.status_code == 413
    # The ingress keeps serving.
    assert running.get("/v1/mantle/release").status_code == 200
    assert json.loads(running.get("/v1/models").text)["data"][0]["id"] == MODEL


def test_no_frame_is_an_error_for_a_completed_request(running: Cluster) -> None:
    nodes = verified_nodes(running)
    sealed, _key = seal_request(
        RequestBody.of(canary_request(3)),
        model=MODEL,
        max_tokens=3,
        candidates=[nodes[0]["static"]],  # type: ignore[list-item]
        entropy=os.urandom,
    )
    answer = running.post(sealed.encode())
    assert answer.status_code == 200
    assert ERROR_FRAME not in {kind for kind, _ in frames_of(answer.content)}
