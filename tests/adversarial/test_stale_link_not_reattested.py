"""Attack: keep a node link open after the peer stopped being what it attested.

An attestation checked once, when a link comes up, says nothing about later:
the operator can let node b link up while b runs the released code and then
change what b runs (its PCRs move), or have b stop answering anything that
would show it. On the base code a link, once up, stayed up for good. Now each
side re-attests its peer on a timer with a fresh challenge; a refused answer
(b's PCRs changed) or a missing one (b stopped answering) closes the link, so
``peer_down`` fires, and the redial has to pass attestation again.
"""

from __future__ import annotations

import hashlib

import pytest
import trio
from _node_attestation import Cloud, LogCapture, NodeAttestation, RecordingEvents

from actors.attestation import Evidence
from actors.lowlevel import Backoff
from nodes.random import SystemRandom
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.measurement import APPLICATION_PCRS

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.02, factor=2.0, maximum=0.1, jitter=0.5)
INTERVAL = 0.2
TIMEOUT = 0.3


class Withholding:
    """b's attestation source, which the operator can make stop answering."""

    def __init__(self, node: NodeAttestation) -> None:
        self._node = node
        self.withhold = False

    async def __call__(self, nonce: bytes) -> Evidence:
        if self.withhold:
            await trio.sleep_forever()
        return await self._node.service.attest(nonce)


def _transport(name: str, node: NodeAttestation, attest: object) -> TcpNoiseTransport:
    return TcpNoiseTransport(
        name,
        static=node.static,
        random=SystemRandom(),
        peers={},
        attest=attest,  # type: ignore[arg-type]
        verify_attestation=node.verifier,
        backoff=FAST,
        handshake_timeout=1.0,
        reattest_interval=INTERVAL,
        reattest_timeout=TIMEOUT,
        min_answer_interval=0.0,
    )


async def _linked(
    nursery: trio.Nursery,
) -> tuple[NodeAttestation, Withholding, TcpNoiseTransport, RecordingEvents]:
    cloud = Cloud("adversarial-stale-link")
    a, b = cloud.node("a"), cloud.node("b")
    b_source = Withholding(b)
    ta, tb = _transport("a", a, a.service.attest), _transport("b", b, b_source)
    events = RecordingEvents()
    ta.bind(events)
    tb.bind(RecordingEvents())
    port_a: int = await nursery.start(ta.run)
    port_b: int = await nursery.start(tb.run)
    ta.add_peer("b", PeerAddress("127.0.0.1", port_b, b.static.public))
    tb.add_peer("a", PeerAddress("127.0.0.1", port_a, a.static.public))
    assert ta.send("b", b"hello")  # dials b
    with trio.fail_after(5):
        while events.count("up", "b") == 0:
            await trio.sleep(0.01)
    # The link survives honest re-attestation rounds.
    await trio.sleep(3 * (INTERVAL + TIMEOUT))
    assert events.count("down", "b") == 0
    return b, b_source, ta, events


async def _wait_down(events: RecordingEvents) -> None:
    with trio.fail_after(5):
        while events.count("down", "b") == 0:
            await trio.sleep(0.01)


async def test_a_peer_whose_pcrs_change_is_cut_off() -> None:
    logs = LogCapture()
    async with trio.open_nursery() as nursery:
        b, _, ta, events = await _linked(nursery)
        b.tpm.pcr_extend(APPLICATION_PCRS[0], hashlib.sha384(b"other code").digest())
        await _wait_down(events)
        failures = logs.events("node_link_reattestation_failed")
        assert [(f["peer"], f["check"], f["reason"]) for f in failures][:1] == [
            ("b", "reattest.rejected", "pcr_policy")
        ]
        # Redials reach b, but b's documents no longer pass: the link stays down.
        await trio.sleep(1.0)
        assert events.count("up", "b") == 1
        assert not ta.send("b", b"to a node that is no longer trusted")
        nursery.cancel_scope.cancel()


async def test_a_peer_that_stops_answering_is_cut_off() -> None:
    logs = LogCapture()
    async with trio.open_nursery() as nursery:
        _, b_source, _, events = await _linked(nursery)
        b_source.withhold = True
        await _wait_down(events)
        failures = logs.events("node_link_reattestation_failed")
        assert [(f["peer"], f["check"]) for f in failures][:1] == [("b", "reattest.lapsed")]
        await trio.sleep(1.0)
        assert events.count("up", "b") == 1  # a redial cannot pass without an answer either
        nursery.cancel_scope.cancel()
