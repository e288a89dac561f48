"""The inference node's side of the end-to-end path: sealed requests opened
with the node's static key, answers sealed under the request key and ended by
a receipt signed with the node's receipt key, and documents over clients'
nonces for the scheduler to relay.

Only this node can read what it serves here: the request key arrives in a
Noise ``N`` envelope to the node's attested static key, which never leaves
key custody; the scheduler that placed the request and the ingress that
relays the records hold ciphertext only.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from actors import Actor, ActorError, Context
from actors.attestation import AttestationUnavailable, Evidence
from actors.key_custody import NodeKeyCustody
from actors.seams.random import Random
from protocol.e2e import (
    RESPONSE_SALT_SIZE,
    E2ECheck,
    E2EError,
    ResponseSealer,
    SealedRequest,
    open_request,
    request_digest,
)
from protocol.inference import GenerateChunk, GenerateDone, GenerateRequest
from protocol.messages import ErrorCode, ErrorReply
from protocol.scheduling import AttestNode, NodeAttestation

#: The registered name of the actor answering ``sched.attest`` on an
#: inference node (apart from the worker, so a TPM command never holds up a
#: placement or a cancel).
ATTESTOR_NAME: Final = "inference_attestor"
#: Sealed request ids a worker remembers having opened: it never answers one
#: twice, so no request key seals two answers on this node.
REMEMBERED_REQUESTS: Final = 65536

#: Where a client-path document comes from: the node's attestation service
#: (``AttestationService.attest_client_channel``, bounded and behind the
#: node links' proofs), whose documents carry the receipt key's binding.
ClientAttest = Callable[[bytes], Awaitable[Evidence]]


@dataclasses.dataclass(frozen=True, slots=True)
class SealedServing:
    """What a worker needs to serve sealed requests: the node's key custody
    (static key to open them, receipt key to sign), and what every receipt
    names -- the release's digest of the model and the release's version."""

    custody: NodeKeyCustody
    model_sha384: bytes = dataclasses.field(repr=False)
    release_version: int

    def __post_init__(self) -> None:
        if self.custody.receipt_public is None:
            raise ValueError("a node serving sealed requests holds a receipt key")
        if len(self.model_sha384) != 48:
            raise ValueError("the model digest is 48 bytes (SHA-384)")
        if not 0 < self.release_version < 1 << 64:
            raise ValueError("the release version is positive")


class SeenRequests:
    """The sealed request ids a worker opened, the oldest forgotten first."""

    __slots__ = ("_limit", "_order", "_seen")

    def __init__(self, limit: int = REMEMBERED_REQUESTS) -> None:
        self._limit = limit
        self._order: deque[bytes] = deque()
        self._seen: set[bytes] = set()

    def first_sight(self, request_id: bytes) -> bool:
        if request_id in self._seen:
            return False
        self._order.append(request_id)
        self._seen.add(request_id)
        if len(self._order) > self._limit:
            self._seen.discard(self._order.popleft())
        return True


def _refusal(check: E2ECheck) -> ErrorReply:
    """How a sealed request this node cannot open ends (codes only): one not
    sealed for it is retryable elsewhere; one that does not open is not."""
    if check is E2ECheck.NO_ENVELOPE:
        return ErrorReply(ErrorCode.UNAVAILABLE, True)
    return ErrorReply(ErrorCode.BAD_REQUEST, False)


@dataclasses.dataclass(slots=True)
class OpenedRequest:
    """A sealed request this node opened: the request to generate, and the
    sealer of its answer (holding the request key, which nothing else sees)."""

    request: GenerateRequest
    sealer: ResponseSealer
    request_sha256: bytes


def open_sealed(
    sealed: SealedRequest, serving: SealedServing, *, random: Random
) -> OpenedRequest | ErrorReply:
    """Open ``sealed`` with the node's static key, or the error it ends with.

    The answer's sealer takes a fresh response salt from ``random``: were
    this request ever answered again (here or on another candidate), that
    answer would be sealed under another key."""
    check: E2ECheck | None = None
    opened = None
    try:
        opened = open_request(sealed, static=serving.custody.static)
    except E2EError as error:
        check = error.check
    if opened is None:
        return _refusal(check if check is not None else E2ECheck.REQUEST_MALFORMED)
    request, key = opened
    sealer = ResponseSealer(key, sealed.request_id, salt=random.token_bytes(RESPONSE_SALT_SIZE))
    return OpenedRequest(request, sealer, request_digest(sealed.request_id, request))


def seal_reply(
    reply: GenerateChunk | GenerateDone,
    opened: OpenedRequest,
    sealed: SealedRequest,
    serving: SealedServing,
) -> bytes:
    """``reply`` as a sealed record: a chunk, or the final record whose
    receipt covers the request and the whole answer."""
    if isinstance(reply, GenerateChunk):
        return opened.sealer.seal_chunk(reply)
    receipt = serving.custody.sign_receipt(
        request_id=sealed.request_id,
        request_sha256=opened.request_sha256,
        response_sha256=opened.sealer.response_sha256(reply),
        model=opened.request.model,
        model_sha384=serving.model_sha384,
        release_version=serving.release_version,
    )
    return opened.sealer.seal_final(reply, receipt)


class NodeAttestor(Actor):
    """Answers ``sched.attest`` asks (registered as :data:`ATTESTOR_NAME`):
    a fresh document over the client's nonce on the attestation service's
    client path, so a flood of clients' listings never delays this node's own
    links' proofs; ``core.error`` (``UNAVAILABLE``) when the TPM fails."""

    def __init__(self, attest: ClientAttest, *, static_public: bytes) -> None:
        self._attest = attest
        self._static_public = static_public

    async def receive(self, ctx: Context, message: object) -> object:
        if not isinstance(message, AttestNode):
            return None
        evidence: Evidence | None = None
        with contextlib.suppress(AttestationUnavailable, ValueError, ActorError):
            evidence = await self._attest(message.nonce)
        if evidence is None:
            return ErrorReply(ErrorCode.UNAVAILABLE, True)
        return NodeAttestation(evidence.kind, evidence.document, self._static_public)


__all__ = [
    "ATTESTOR_NAME",
    "REMEMBERED_REQUESTS",
    "ClientAttest",
    "NodeAttestor",
    "OpenedRequest",
    "SealedServing",
    "SeenRequests",
    "open_sealed",
    "seal_reply",
]
