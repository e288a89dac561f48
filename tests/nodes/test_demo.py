"""The main job (``make demo``) end to end, with a canary prompt.

Runs the real path: signed and logged release, measured boot on simulated
NitroTPMs, sealed weights released to the attested node, llama.cpp on the
demo model, a client that verifies attestation before sending, and an
impostor node that the client refuses.
"""

from __future__ import annotations

import io
import json

import anyio
import anyio.to_thread
import pytest
from _node_attestation import Cloud

from actors.channel import NODE_LINK_PROTOCOL, NOT_ATTESTED, ChannelAttestation, connect_secure
from actors.inference import InferenceActor, serve_inference
from actors.log import configure_logging
from nodes.demo import MODEL_ID, _serve, demo_model_path, run_demo
from nodes.random import SystemRandom
from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, GenerateChunk, GenerateRequest, Role
from protocol.messages import Envelope, ErrorCode, ErrorReply
from protocol.noise import KeyPair, NoiseProtocol
from simulations.engine import ScriptedEngine

pytestmark = pytest.mark.anyio

CANARY = "CANARY-4b1d0e Which colour is the sky on a clear day?"


async def test_demo_serves_the_model_to_a_verifying_client_and_refuses_an_impostor() -> None:
    logs = io.StringIO()
    configure_logging(logs, level="debug")
    out = io.StringIO()
    await run_demo(CANARY, out, model=demo_model_path(), max_tokens=24)
    text = out.getvalue()

    assert "[release] v1 signed by 2 of 3" in text
    assert "passed measured boot" in text
    assert "data key released to the attested inference node" in text
    assert "verified: chain to the pinned root" in text
    answer = text.split("[client] answer: ", 1)[1].split("\n[client] done:", 1)[0]
    assert answer.strip(), "the model produced no text"
    assert "[client] done: " in text
    assert "impostor node refused during the handshake (pcr_policy)" in text

    # The client prints its own prompt; nothing else may carry it.
    assert CANARY not in logs.getvalue()
    for line in logs.getvalue().splitlines():
        json.loads(line)


class _FailingEngine(ScriptedEngine):
    """Produces two chunks, then fails the way a broken model would."""

    def generate(self, messages, params, cancel):  # type: ignore[no-untyped-def]
        chunks = super().generate(messages, params, cancel)
        yield next(chunks)
        yield next(chunks)
        raise RuntimeError(CANARY)


async def test_a_request_that_fails_mid_generation_ends_with_an_explicit_error() -> None:
    logs = io.StringIO()
    configure_logging(logs, level="debug")
    random = SystemRandom()
    proto = NoiseProtocol.from_name(NODE_LINK_PROTOCOL)
    node = Cloud("test-demo").node("inference")
    received: list[object] = []
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            _serve,
            serve_inference(InferenceActor(_FailingEngine(MODEL_ID), anyio.to_thread.run_sync)),
            node.static,
            node.service.attest,
            random,
        )
        stream = await anyio.connect_tcp("127.0.0.1", port)
        channel = await connect_secure(
            stream,
            static=KeyPair.generate(proto.dh, random.token_bytes),
            entropy=random.token_bytes,
            verify_peer=lambda static, payload: None,
            attestation=ChannelAttestation(prove=NOT_ATTESTED, require=node.verifier),
        )
        async with channel:
            request = GenerateRequest(
                MODEL_ID, (ChatTurn(Role.USER, CustomerData(CANARY)),), 16, 0.0, 1.0, 0
            )
            await channel.send_message(Envelope.wrap(request, request_id=7))
            while True:
                envelope = await channel.receive_message()
                received.append(envelope.body)
                if not isinstance(envelope.body, GenerateChunk):
                    break
        # The server logs the failed connection once the handler has returned.
        with anyio.fail_after(10):
            while "RuntimeError" not in logs.getvalue():
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert [type(b) for b in received] == [GenerateChunk, GenerateChunk, ErrorReply]
    error = received[-1]
    assert isinstance(error, ErrorReply) and error.code is ErrorCode.INTERNAL
    assert CANARY not in logs.getvalue()
