"""``serve_inference``: the inference room's adapter on a secure channel.

A request that fails mid-generation ends with an explicit error (I7), and the
failure (whose text quotes the prompt) reaches the logs by type only.
"""

from __future__ import annotations

import io

import anyio
import anyio.abc
import anyio.to_thread
import pytest
from _node_attestation import Cloud

from actors.attestation import Attest
from actors.channel import (
    NODE_LINK_PROTOCOL,
    NOT_ATTESTED,
    ChannelAttestation,
    ConnectionHandler,
    connect_secure,
)
from actors.inference import InferenceActor, serve_inference
from actors.log import configure_logging
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, GenerateChunk, GenerateRequest, Role
from protocol.messages import Envelope, ErrorCode, ErrorReply
from protocol.noise import KeyPair, NoiseProtocol
from simulations.engine import ScriptedEngine

pytestmark = pytest.mark.anyio

MODEL_ID = "scripted-model"
CANARY = "CANARY-4b1d0e Which colour is the sky on a clear day?"


async def _accept_any_client(remote_static: bytes, payload: bytes) -> None:
    """Customers are not attested nodes: their evidence is the empty one."""


async def _serve(
    handler: ConnectionHandler,
    static: KeyPair,
    prove: Attest,
    random: SystemRandom,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await serve_secure(
        "127.0.0.1",
        0,
        handler,
        static=static,
        entropy=random.token_bytes,
        verify_peer=_accept_any_client,
        attestation=ChannelAttestation(prove=prove, require=NOT_ATTESTED),
        task_status=task_status,
    )


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
