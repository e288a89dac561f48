"""What the end-to-end tests share: deterministic entropy, node keys, a request
body with a canary in it, and a whole exchange (seal, open, answer, receipt)
run with the real ``protocol.e2e`` code."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.customer_data import CustomerData
from protocol.e2e import (
    REQUEST_ENVELOPE_PROTOCOL,
    Receipt,
    RequestBody,
    RequestKey,
    ResponseSealer,
    SealedRequest,
    open_request,
    request_digest,
    seal_request,
    sign_receipt,
)
from protocol.inference import ChatTurn, FinishReason, GenerateChunk, GenerateDone, Role
from protocol.noise import KeyPair

CANARY = "CANARY-e2e-7f3c1a"
MODEL = "demo-model"
MODEL_SHA384 = hashlib.sha384(b"demo-model weights").digest()
RELEASE_VERSION = 7


def entropy(seed: str) -> Callable[[int], bytes]:
    """A deterministic entropy source (SHA-256 in counter mode over ``seed``)."""
    counter = 0

    def draw(size: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < size:
            out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
            counter += 1
        return out[:size]

    return draw


def node_key(name: str) -> KeyPair:
    """An inference node's static key (deterministic per name)."""
    return KeyPair.generate(REQUEST_ENVELOPE_PROTOCOL.dh, entropy(f"node-static/{name}"))


def receipt_key(name: str) -> Ed25519PrivateKey:
    """An inference node's receipt key (deterministic per name)."""
    return Ed25519PrivateKey.from_private_bytes(entropy(f"receipt/{name}")(32))


def body(prompt: str = CANARY) -> RequestBody:
    return RequestBody(
        turns=(
            ChatTurn(Role.SYSTEM, CustomerData("be brief")),
            ChatTurn(Role.USER, CustomerData(prompt)),
        ),
        temperature=0.7,
        top_p=0.9,
        seed=42,
        stop=(CustomerData("\n\n"),),
    )


def seal(
    candidates: Sequence[KeyPair],
    *,
    prompt: str = CANARY,
    model: str = MODEL,
    max_tokens: int = 64,
    seed: str = "client",
) -> tuple[SealedRequest, RequestKey, bytes]:
    """A sealed request for ``candidates``, its key, and its request digest."""
    request_body = body(prompt)
    sealed, key = seal_request(
        request_body,
        model=model,
        max_tokens=max_tokens,
        candidates=[node.public for node in candidates],
        entropy=entropy(seed),
    )
    digest = request_digest(
        sealed.request_id, request_body.to_request(model=model, max_tokens=max_tokens)
    )
    return sealed, key, digest


@dataclasses.dataclass(frozen=True)
class Answer:
    """What a node sent back for one request: its records and its receipt."""

    records: tuple[bytes, ...]
    receipt: Receipt
    text: str
    done: GenerateDone
    #: The node's response salt of this answer.
    salt: bytes


def answer(
    sealed: SealedRequest,
    node: KeyPair,
    *,
    pieces: Sequence[str] = ("Hello", ", ", CANARY, "!"),
    signer: Ed25519PrivateKey | None = None,
    salt: bytes | None = None,
) -> Answer:
    """What ``node`` answers: opens the request, seals ``pieces`` and a final
    record with a receipt signed by ``signer`` (the node's receipt key),
    under the response salt ``salt`` (by default one drawn for this request)."""
    request, key = open_request(sealed, static=node)
    if salt is None:
        salt = entropy(f"response-salt/{sealed.request_id.hex()}")(32)
    sealer = ResponseSealer(key, sealed.request_id, salt=salt)
    records = [sealer.seal_chunk(GenerateChunk(CustomerData(piece), 1)) for piece in pieces]
    done = GenerateDone(FinishReason.STOP, completion_tokens=len(pieces), prompt_tokens=11)
    receipt = sign_receipt(
        signer if signer is not None else receipt_key("node"),
        request_id=sealed.request_id,
        request_sha256=request_digest(sealed.request_id, request),
        response_sha256=sealer.response_sha256(done),
        model=request.model,
        model_sha384=MODEL_SHA384,
        release_version=RELEASE_VERSION,
    )
    records.append(sealer.seal_final(done, receipt))
    return Answer(tuple(records), receipt, "".join(pieces), done, salt)
