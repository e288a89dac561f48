"""The client asking an inference node directly: verify first, then send and stream.

A node booted from a logged release on a simulated NitroTPM serves the
inference room over a secure channel; the client checks the node's document
for this channel against the release's policy for the model before the
request leaves. The model-free engine keeps this test fast; the demo test runs
the same path on the real model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import pytest
from _release_kit import NOW, ReleaseKit

from actors.attestation import AttestationService
from actors.channel import NOT_ATTESTED, ChannelAttestation, ConnectionHandler, SecureChannel
from actors.inference import InferenceActor, serve_inference
from mantle import NodeVerifier, UnexpectedAnswer, ask_node
from nodes.boot import measured_boot
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    NitroAuthenticator,
    TrustAnchor,
    VerifiedAttestation,
)
from protocol.customer_data import CustomerData
from protocol.inference import (
    ChatTurn,
    FinishReason,
    GenerateChunk,
    GenerateDone,
    GenerateRequest,
    Role,
)
from protocol.messages import Envelope, Pong
from simulations.clock import ManualClock
from simulations.engine import ScriptedEngine
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

pytestmark = pytest.mark.anyio

MODEL = "smol"
WEIGHTS = b"GGUF" + bytes(2048)
PROMPT = "CANARY-node-client-0c3d What is two plus two?"


def _request(model: str = MODEL, max_tokens: int = 5) -> GenerateRequest:
    return GenerateRequest(
        model, (ChatTurn(Role.USER, CustomerData(PROMPT)),), max_tokens, 0.0, 1.0, 3
    )


class _World:
    """One logged release, one node booted from it, and the client's verifier."""

    def __init__(self, tmp_path: Path) -> None:
        kit = ReleaseKit(install_root=tmp_path / "install")
        files = kit.publish(1, models={MODEL: WEIGHTS})
        self.release = kit.verified(files)
        self.clock = ManualClock(int(NOW.timestamp() * 1000))
        pki = SimulatedNitroPKI("node-client")
        tpm = SimulatedNitroTPM(seed="inference", pki=pki, clock=self.clock)
        booted = measured_boot(
            kit.boot_inputs(files, MODEL, kit.node_state_dir(tpm)),
            tpm=tpm,
            random=SystemRandom(),
            now=NOW,
        )
        self.static = booted.custody.static
        self.service = AttestationService(
            tpm=tpm,
            custody=booted.custody,
            kind=DocumentKind.NITRO,
            clock=self.clock,
            run_blocking=anyio.to_thread.run_sync,
        )
        self.verifier = AttestationVerifier(
            [NitroAuthenticator(TrustAnchor.from_der(pki.root_der))]
        )

    def node_verifier(self) -> NodeVerifier:
        return NodeVerifier(self.verifier, self.release, MODEL, self.clock)

    async def serve(
        self,
        handler: ConnectionHandler,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async def any_client(remote_static: bytes, payload: bytes) -> None:
            """Customers are not attested."""

        await serve_secure(
            "127.0.0.1",
            0,
            handler,
            static=self.static,
            entropy=SystemRandom().token_bytes,
            verify_peer=any_client,
            attestation=ChannelAttestation(prove=self.service.attest, require=NOT_ATTESTED),
            task_status=task_status,
        )


def _ignore(_: object) -> None:
    pass


def test_a_release_without_the_model_gives_no_verifier(tmp_path: Path) -> None:
    world = _World(tmp_path)
    with pytest.raises(ValueError, match="does not list"):
        NodeVerifier(world.verifier, world.release, "another-model", world.clock)


async def test_a_request_for_another_model_is_refused_before_connecting(tmp_path: Path) -> None:
    world = _World(tmp_path)
    with pytest.raises(ValueError, match="another model"):
        # Port 9 (discard): nothing may be connected to for this to pass.
        await ask_node(
            "127.0.0.1",
            9,
            _request("another-model"),
            world.node_verifier(),
            random=SystemRandom(),
            on_verified=_ignore,
            on_chunk=_ignore,
        )


async def test_the_client_verifies_the_node_before_the_request_and_streams(
    tmp_path: Path,
) -> None:
    world = _World(tmp_path)
    events: list[object] = []
    handler = serve_inference(InferenceActor(ScriptedEngine(MODEL), anyio.to_thread.run_sync))
    record: Callable[[object], None] = events.append
    async with anyio.create_task_group() as servers:
        port = await servers.start(world.serve, handler)
        outcome = await ask_node(
            "127.0.0.1",
            port,
            _request(max_tokens=5),
            world.node_verifier(),
            random=SystemRandom(),
            on_verified=record,
            on_chunk=record,
        )
        servers.cancel_scope.cancel()

    verified = [e for e in events if isinstance(e, VerifiedAttestation)]
    chunks = [e for e in events if isinstance(e, GenerateChunk)]
    assert len(verified) == 1 and verified[0].release is not None
    assert events.index(verified[0]) < events.index(chunks[0])
    assert len(chunks) == 5
    prompt_tokens = ScriptedEngine(MODEL).count_prompt_tokens(_request().turns)
    assert outcome == GenerateDone(FinishReason.LENGTH, 5, prompt_tokens)


async def test_an_answer_that_is_no_reply_to_the_request_is_refused(tmp_path: Path) -> None:
    world = _World(tmp_path)

    async def answer_with_a_pong(channel: SecureChannel) -> None:
        envelope = await channel.receive_message()
        await channel.send_message(Envelope.wrap(Pong(1), request_id=envelope.request_id))

    async with anyio.create_task_group() as servers:
        port = await servers.start(world.serve, answer_with_a_pong)
        with pytest.raises(UnexpectedAnswer) as refused:
            await ask_node(
                "127.0.0.1",
                port,
                _request(),
                world.node_verifier(),
                random=SystemRandom(),
                on_verified=_ignore,
                on_chunk=_ignore,
            )
        servers.cancel_scope.cancel()
    assert refused.value.tag == "core.pong"
