"""Attack: keep a joined node's link after it stopped being what it attested.

An inference node joins the ingress on its attestation; then the operator
changes what it runs (its PCRs move) or makes it stop answering the
ingress's re-attestation challenges. Joined links are re-attested like
configured ones: the refused or missing answer closes the link, ``peer_down``
fires, the node is forgotten (no address to redial, so no way back but a
fresh join, which its documents no longer pass), and no frame reaches it
any more.
"""

from __future__ import annotations

import hashlib

import pytest
import trio
from _node_attestation import Cloud, LogCapture
from _node_links import INTERVAL, TIMEOUT, LinkNode, wait_for

from actors import PeerUnavailable
from protocol.measurement import APPLICATION_PCRS
from protocol.messages import Pong

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("how", ["pcrs-extended", "stops-answering"])
async def test_a_joined_node_whose_attestation_lapses_is_dropped(how: str) -> None:
    logs = LogCapture()
    cloud = Cloud(f"adversarial-joined-lapse-{how}")
    async with trio.open_nursery() as nursery:
        ingress = await LinkNode("ingress-1", cloud, accept_joining=True).start(nursery)
        joined = await LinkNode("inference-1", cloud).start(nursery)
        await joined.join(ingress)
        assert await ingress.ask_echo("inference-1", 1) == Pong(2)
        await trio.sleep(3 * (INTERVAL + TIMEOUT))  # honest rounds pass
        assert ingress.events.count("down", "inference-1") == 0

        if how == "pcrs-extended":
            joined.attestation.tpm.pcr_extend(
                APPLICATION_PCRS[0], hashlib.sha384(b"other code").digest()
            )
            expected = ("reattest.rejected", "pcr_policy")
        else:
            joined.own_attest.withhold = True
            expected = ("reattest.lapsed", None)
        await wait_for(lambda: ingress.events.count("down", "inference-1") == 1)
        failures = logs.events("node_link_reattestation_failed")
        assert [(f["peer"], f["check"], f.get("reason")) for f in failures][:1] == [
            ("inference-1", *expected)
        ]
        assert ingress.joined() == frozenset()
        pings = joined.echo.pings
        assert not ingress.transport.send("inference-1", b"frame")
        with pytest.raises(PeerUnavailable):
            await ingress.ask_echo("inference-1", 2)
        # Its redials (it still has the ingress configured) cannot pass either.
        await trio.sleep(1.0)
        assert ingress.events.count("up", "inference-1") == 1
        assert ingress.joined() == frozenset()
        assert joined.echo.pings == pings
        nursery.cancel_scope.cancel()
