"""Attack: keep a node link open past a failed re-attestation by not reading.

Node q links up with n while it runs the released code; then the operator
changes what q runs (its PCRs move), so q would fail its next re-attestation.
To keep the link anyway q stops reading its socket while it keeps sending
frames. n has frames queued for q, so n's writes fill the TCP buffers and
block. On the base code the challenge n sends to q then blocked too, and its
answer deadline only started once the send returned: n never cut the link,
never counted a failure, and kept handing q's frames to its runtime.

Now one deadline covers sending the challenge and waiting for the answer (a
send that does not complete in time is a lapse), and every write on a link
has its own deadline, so a peer that stops reading loses the link either way.
"""

from __future__ import annotations

import hashlib
import time

import anyio
import pytest
import trio
from _node_attestation import Cloud, LogCapture, NodeAttestation, RecordingEvents, hello

from actors.attestation import Reattestation, ReattestationFailed
from actors.channel import ChannelAttestation, SecureChannel, connect_secure
from actors.lowlevel import Backoff
from nodes.random import SystemRandom
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.measurement import APPLICATION_PCRS

pytestmark = pytest.mark.anyio

RANDOM = SystemRandom()
CLOUD = Cloud("adversarial-peer-stops-reading")
INTERVAL = 0.3
TIMEOUT = 0.5
#: What n's runtime has queued for q: far more than loopback TCP buffers hold.
QUEUED_FRAMES = 256
FRAME = bytes(64 * 1024)


async def test_a_challenge_that_cannot_be_sent_lapses() -> None:
    """The mechanism: the send of the challenge never completes."""

    class Channel:
        handshake_hash = bytes(32)
        remote_static = bytes(32)
        is_initiator = True

    node = CLOUD.node("n")

    async def send_into_a_full_socket(message: bytes) -> None:
        await trio.sleep_forever()

    reattestation = Reattestation(
        Channel(),
        prove=node.service.attest,
        verify=node.verifier,
        send=send_into_a_full_socket,
        clock=CLOUD.clock,
        random=RANDOM,
        interval_s=INTERVAL,
        timeout_s=TIMEOUT,
        min_answer_interval_s=0.0,
    )
    started = time.monotonic()
    with trio.fail_after(5), pytest.raises(ReattestationFailed) as failed:
        await reattestation.run()
    assert failed.value.check == "reattest.lapsed"
    assert time.monotonic() - started <= INTERVAL + TIMEOUT + 1.0


async def _silent_peer(port: int, q: NodeAttestation) -> SecureChannel:
    """q's side of the link: a genuine, attested channel, never read from."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    return await connect_secure(
        stream,
        static=q.static,
        entropy=RANDOM.token_bytes,
        verify_peer=lambda static, payload: None,
        attestation=ChannelAttestation(prove=q.service.attest, require=q.verifier),
        handshake_payload=hello("q"),
    )


async def _stall(n_transport: TcpNoiseTransport, q: NodeAttestation) -> tuple[RecordingEvents, int]:
    """Link q to n, change q's PCRs, fill n's queue, stop reading, and keep
    sending frames for a while; returns n's events and how many of q's
    frames n's runtime had received when the link went down."""
    events = RecordingEvents()
    n_transport.bind(events)
    at_down = -1
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(n_transport.run)
        channel = await _silent_peer(port, q)
        with trio.fail_after(5):
            while events.count("up", "q") == 0:
                await trio.sleep(0.01)
        # From here on q would fail any re-attestation...
        q.tpm.pcr_extend(APPLICATION_PCRS[0], hashlib.sha384(b"other code").digest())
        # ...and n has data for q, which q never reads.
        for _ in range(QUEUED_FRAMES):
            assert n_transport.send("q", FRAME)
        # q keeps talking: 3 s at most, and 0.5 s past the cut.
        deadline = trio.current_time() + 3.0
        while trio.current_time() < deadline:
            if at_down < 0 and events.count("down", "q"):
                at_down = len(events.frames)
                deadline = min(deadline, trio.current_time() + 0.5)
            try:
                await channel.send(b"\x00frame from q")
            except Exception:
                break  # n has closed its end
            await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    await channel.aclose()
    return events, at_down


def _transport(n: NodeAttestation, q: NodeAttestation, **timing: float) -> TcpNoiseTransport:
    return TcpNoiseTransport(
        "n",
        static=n.static,
        random=RANDOM,
        # q's address is a closed port: only q's inbound channel brings the link up.
        peers={"q": PeerAddress("127.0.0.1", 1, q.static.public)},
        attest=n.service.attest,
        verify_attestation=n.verifier,
        backoff=Backoff(initial=30, factor=1.0, maximum=30, jitter=0.0),
        min_answer_interval=0.0,
        **timing,  # type: ignore[arg-type]
    )


async def test_a_peer_that_stops_reading_fails_reattestation() -> None:
    logs = LogCapture()
    n, q = CLOUD.node("n"), CLOUD.node("q")
    started = time.monotonic()
    events, at_down = await _stall(
        _transport(n, q, reattest_interval=INTERVAL, reattest_timeout=TIMEOUT), q
    )
    assert events.count("down", "q") == 1, "n kept the link to a peer that stopped reading"
    assert time.monotonic() - started < 4.0
    failures = logs.events("node_link_reattestation_failed")
    assert [(f["peer"], f["check"]) for f in failures] == [("q", "reattest.lapsed")]
    # q's frames stopped reaching n's runtime with the link.
    assert len(events.frames) == at_down


async def test_a_write_to_a_peer_that_stops_reading_has_a_deadline() -> None:
    """Without re-attestation due (a long interval), the write deadline cuts."""
    logs = LogCapture()
    n, q = CLOUD.node("n"), CLOUD.node("q")
    write_timeout = 0.5
    started = time.monotonic()
    events, at_down = await _stall(
        _transport(n, q, reattest_interval=60.0, write_timeout=write_timeout), q
    )
    assert events.count("down", "q") == 1, "n kept writing into a peer that stopped reading"
    assert time.monotonic() - started < 4.0
    assert logs.checks("node_link_write_failed") == ["transport.write_timeout"]
    assert len(events.frames) == at_down
