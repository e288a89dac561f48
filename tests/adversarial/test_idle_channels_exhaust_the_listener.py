"""Attack: hold idle channels until the node runs out of file descriptors.

Anyone may open a channel to a node that serves customers: complete the Noise
handshake with a throwaway key, send the empty evidence message a customer
sends, and then say nothing. On the base code nothing bounded how many such
channels a server held, and the demo's inference handler waited for the
first request for ever, so each idle channel kept its descriptor; at the
process's descriptor limit ``accept()`` failed with ``EMFILE``, anyio's
``listener.serve`` raised ``BrokenResourceError`` and ``serve_secure`` -- the
node -- ended for good: nobody could connect any more, even after the
attacker left.

Now ``serve_secure`` runs its own accept loop, which waits out ``EMFILE``
(and ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) and serves again once descriptors
are free; at most ``max_channels`` channels are established at once, a
connection beyond them closed before its handshake (no TPM work); and the
demo's handler cuts a client that sends no request within its deadline.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import anyio.abc
import pytest
from _node_attestation import Cloud, NodeAttestation, new_key, raw_handshake

from actors.attestation import EvidenceMessage, encode_control
from actors.channel import (
    NOT_ATTESTED,
    ChannelAttestation,
    ChannelLimitReached,
    SecureChannel,
    connect_secure,
)
from actors.inference import InferenceActor, serve_inference
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from protocol.framing import SessionError

pytestmark = pytest.mark.anyio

RANDOM = SystemRandom()
SEED = "adversarial-idle-channels"
CLOUD = Cloud(SEED)
TESTS = Path(__file__).resolve().parent.parent
# Low enough that the attack takes well under a second, high enough for the
# interpreter's own descriptors (stdio, epoll, trio's wakeup pair, the listener).
CHILD_FD_LIMIT = 64

# The victim: a node serving customers, in a process of its own so that its
# descriptor limit can be lowered. Its handler answers whatever the client
# says, and waits for that as long as the client likes (the base demo's did);
# the default channel cap is above this limit, so the process does run out of
# descriptors.
CHILD = f"""
import resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({CHILD_FD_LIMIT}, hard))
import anyio, functools
from _node_attestation import Cloud
from actors.channel import NOT_ATTESTED, ChannelAttestation
from nodes.tcp import serve_secure
from actors.log import configure_logging
from nodes.random import SystemRandom

configure_logging(sys.stderr, level="warning")
node = Cloud({SEED!r}).node("victim")

async def echo(channel):
    async for payload in channel:
        await channel.send(payload)

async def main():
    async with anyio.create_task_group() as group:
        port = await group.start(functools.partial(
            serve_secure, "127.0.0.1", 0, echo,
            static=node.static, entropy=SystemRandom().token_bytes,
            verify_peer=lambda static, payload: None,
            attestation=ChannelAttestation(prove=node.service.attest, require=NOT_ATTESTED)))
        print(port, flush=True)

anyio.run(main, backend="trio")
"""


async def _idle_channel(port: int, timeout: float) -> anyio.abc.SocketStream:
    """The attacker's channel: handshake, the empty evidence, then silence."""
    with anyio.fail_after(timeout):
        stream = await anyio.connect_tcp("127.0.0.1", port)
    try:
        with anyio.fail_after(timeout):
            session = await raw_handshake(stream, new_key(), b"")
            await stream.send(session.send(encode_control(EvidenceMessage.of(None))))
            # The node's evidence comes back once the channel is established.
            await stream.receive()
    except BaseException:
        await stream.aclose()
        raise
    return stream


async def _honest_round_trip(port: int, node: NodeAttestation, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        stream = await anyio.connect_tcp("127.0.0.1", port)
        channel = await connect_secure(
            stream,
            static=new_key(),
            entropy=RANDOM.token_bytes,
            verify_peer=lambda static, payload: None,
            attestation=ChannelAttestation(prove=NOT_ATTESTED, require=node.verifier),
        )
        async with channel:
            await channel.send(b"ping")
            assert await channel.receive() == b"ping"


async def test_running_out_of_descriptors_does_not_end_the_server() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    held: list[anyio.abc.SocketStream] = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        # Idle channels until the victim stops completing handshakes: it is
        # out of descriptors (bounded: never more attempts than its limit).
        for _ in range(CHILD_FD_LIMIT):
            try:
                held.append(await _idle_channel(port, timeout=1.0))
            except (TimeoutError, OSError, anyio.EndOfStream, anyio.BrokenResourceError):
                break
        else:
            pytest.fail("the victim never ran out of descriptors")
        # The attacker leaves; the node must serve again.
        for stream in held:
            await stream.aclose()
        held.clear()
        victim = Cloud(SEED).node("victim")  # same cloud, same policy: verifies the child
        await _honest_round_trip(port, victim)
        assert child.poll() is None, "the server process ended"
    finally:
        for stream in held:
            await stream.aclose()
        child.kill()
        _, stderr = child.communicate(timeout=10)
    shortages = [
        json.loads(line) for line in stderr.splitlines() if '"secure_channel.accept_failed"' in line
    ]
    assert shortages, "the accept loop met no shortage: the attack did not reach the limit"
    assert {record["reason"] for record in shortages} == {"EMFILE"}


async def _serve(
    node: NodeAttestation,
    handler: object,
    errors: list[Exception],
    *,
    max_channels: int,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await serve_secure(
        "127.0.0.1",
        0,
        handler,  # type: ignore[arg-type]
        static=node.static,
        entropy=RANDOM.token_bytes,
        verify_peer=lambda static, payload: None,
        attestation=ChannelAttestation(prove=node.service.attest, require=NOT_ATTESTED),
        max_channels=max_channels,
        on_error=errors.append,
        task_status=task_status,
    )


async def echo(channel: SecureChannel) -> None:
    async for payload in channel:
        await channel.send(payload)


async def test_channels_beyond_the_cap_are_refused_before_any_tpm_work() -> None:
    node = CLOUD.node("server")
    errors: list[Exception] = []
    cap = 4
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            port = await group.start(
                functools.partial(_serve, node, echo, errors, max_channels=cap)
            )
            held = [await _idle_channel(port, timeout=5.0) for _ in range(cap)]
            proofs = node.service.attestations
            # The newest is refused at once: closed before its handshake.
            with pytest.raises((SessionError, anyio.EndOfStream, anyio.BrokenResourceError)):
                await _idle_channel(port, timeout=2.0)
            assert [type(e) for e in errors] == [ChannelLimitReached]
            assert node.service.attestations == proofs
            # The channels held are served; once one goes, a newcomer gets in.
            await held.pop().aclose()
            for _ in range(20):
                try:
                    await _honest_round_trip(port, node)
                except SessionError:
                    await anyio.sleep(0.05)  # the server has not seen the close yet
                    continue
                break
            else:
                pytest.fail("no channel came free")
            for stream in held:
                await stream.aclose()
            group.cancel_scope.cancel()


async def test_the_demo_cuts_a_client_that_sends_no_request() -> None:
    node = CLOUD.node("inference")
    errors: list[Exception] = []
    deadline = 0.3
    handler = serve_inference(
        InferenceActor(None, anyio.to_thread.run_sync), first_request_timeout=deadline
    )
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            port = await group.start(
                functools.partial(_serve, node, handler, errors, max_channels=1)
            )
            idle = await _idle_channel(port, timeout=5.0)
            started = time.monotonic()
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                while True:
                    await idle.receive()  # the node's bytes, until it closes
            assert deadline * 0.8 <= time.monotonic() - started <= deadline + 2.0
            while not errors:
                await anyio.sleep(0.01)
            assert [type(e) for e in errors] == [TimeoutError]
            # Its place is free again: the next client gets the channel.
            await idle.aclose()
            await _idle_channel(port, timeout=5.0)
            group.cancel_scope.cancel()
