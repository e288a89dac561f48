"""Asking an inference node directly, after checking what it runs.

The client does not know a node's key in advance. The Noise XX handshake
authenticates whatever static key the node presents; the attestation
document the node then produces for this very channel must verify
(:class:`NodeVerifier`): chain to the pinned root, the nonce derived from this
handshake's hash (fresh, and bound to this session), the PCRs of a logged
release serving the model, and the binding of that very handshake key. Only
then does the request leave (:func:`ask_node`); a node that fails is refused
while the channel is set up (:class:`~protocol.framing.PeerRejected`, chained
to the :class:`~protocol.attestation.AttestationError` naming the check) and
is sent nothing.

This is the direct path the demo uses (one node, its address known). The
end-to-end path through ingress, which wraps the request to candidate nodes'
attested keys, is the client issue's to build.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import anyio

from actors.attestation import Evidence, PeerAttestationVerifier
from actors.channel import (
    NODE_LINK_PROTOCOL,
    NOT_ATTESTED,
    ChannelAttestation,
    connect_secure,
)
from actors.seams.clock import Clock
from actors.seams.random import Random
from protocol.attestation import AttestationVerifier, VerifiedAttestation
from protocol.inference import GenerateChunk, GenerateDone, GenerateRequest
from protocol.measurement import model_policy
from protocol.messages import Envelope, ErrorReply
from protocol.noise import KeyPair, NoiseProtocol
from protocol.release import VerifiedRelease

_NOISE: Final = NoiseProtocol.from_name(NODE_LINK_PROTOCOL)
#: One request per channel; its replies carry the same id.
_REQUEST_ID: Final = 1


class UnexpectedAnswer(Exception):
    """The node answered a generation request with a message that is neither a
    chunk, the end of the answer, nor an error (named by its registered tag)."""

    def __init__(self, tag: str) -> None:
        super().__init__(f"the node answered with {tag}")
        self.tag = tag


class NodeVerifier:
    """The client's check of an inference node's evidence after the handshake:
    the document must verify against the pinned root, carry the nonce derived
    from this channel's handshake hash (so it is fresh and bound to this
    session), show the PCRs of a logged release serving ``model_id`` (the
    policy of ``release``, platform and application registers together), and
    bind the very Noise key this handshake authenticated."""

    def __init__(
        self,
        verifier: AttestationVerifier,
        release: VerifiedRelease,
        model_id: str,
        clock: Clock,
    ) -> None:
        policy = model_policy([release], model_id)
        if policy is None:
            raise ValueError(f"the release does not list {model_id}")
        self.model_id = model_id
        self._check = PeerAttestationVerifier(verifier=verifier, policy=policy, clock=clock)

    def __call__(
        self, remote_static: bytes, evidence: Evidence, expected_nonce: bytes
    ) -> VerifiedAttestation:
        return self._check(remote_static, evidence, expected_nonce)


async def _key_checked_by_attestation(remote_static: bytes, payload: bytes) -> None:
    """The client does not know the node's key in advance: the node's
    attestation, checked right after the handshake, binds it."""


async def ask_node(
    host: str,
    port: int,
    request: GenerateRequest,
    verifier: NodeVerifier,
    *,
    random: Random,
    on_verified: Callable[[VerifiedAttestation], None],
    on_chunk: Callable[[GenerateChunk], None],
) -> GenerateDone | ErrorReply:
    """Send ``request`` to the inference node at ``host:port`` once it proved
    itself to ``verifier``; stream the answer.

    ``on_verified`` is called once, with what the node proved, before the
    request leaves; ``on_chunk`` with each chunk of the answer, in order.
    Returns what ended the answer: :class:`GenerateDone` or the node's
    :class:`ErrorReply`. ``random`` is the Random seam (the client's Noise keys
    are born from it for this one channel).
    """
    if request.model != verifier.model_id:
        raise ValueError("the request names another model than the node is verified for")
    proved: VerifiedAttestation | None = None

    def require(remote_static: bytes, evidence: Evidence, expected_nonce: bytes) -> object:
        nonlocal proved
        proved = verifier(remote_static, evidence, expected_nonce)
        return proved

    stream = await anyio.connect_tcp(host, port)
    channel = await connect_secure(
        stream,
        static=KeyPair.generate(_NOISE.dh, random.token_bytes),
        entropy=random.token_bytes,
        verify_peer=_key_checked_by_attestation,
        attestation=ChannelAttestation(prove=NOT_ATTESTED, require=require),
    )
    async with channel:
        if proved is None:
            # connect_secure returns only after the exchange passed; fail
            # closed all the same rather than send to an unproven node.
            raise RuntimeError("the channel opened without the node's attestation")
        on_verified(proved)
        await channel.send_message(Envelope.wrap(request, request_id=_REQUEST_ID))
        while True:
            envelope = await channel.receive_message()
            body = envelope.body
            if isinstance(body, GenerateChunk):
                on_chunk(body)
            elif isinstance(body, GenerateDone | ErrorReply):
                return body
            else:
                raise UnexpectedAnswer(envelope.tag)
