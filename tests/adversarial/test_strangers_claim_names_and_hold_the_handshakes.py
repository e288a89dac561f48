"""Attack: fill the ingress's handshakes with strangers claiming node names.

The ingress admits joiners, whose keys nobody knows in advance: anyone can
make a key, complete the Noise handshake claiming a free node name, and then
stay silent (or make the ingress prove itself to it). Were such a stranger
treated like a configured node, its handshake would hold an unevictable slot
until its deadline and cost the ingress a TPM command: a few silent
connections would lock every node out and keep the TPM busy. Now the
ingress verifies a stranger's evidence before it proves anything, and its
slot stays evictable until that evidence passed: the strangers cost no TPM
command and an honest node joins through them.
"""

from __future__ import annotations

import anyio
import pytest
import trio
from _node_attestation import Cloud, LogCapture, hello, new_key, raw_handshake
from _node_links import LinkNode, wait_for

from protocol.messages import Pong

pytestmark = pytest.mark.anyio

SLOTS = 4


async def test_silent_strangers_neither_lock_out_joiners_nor_cost_the_tpm() -> None:
    logs = LogCapture()
    cloud = Cloud("adversarial-strangers-hold-handshakes")
    async with trio.open_nursery() as nursery:
        ingress = await LinkNode(
            "ingress-1", cloud, accept_joining=True, max_concurrent_handshakes=SLOTS
        ).start(nursery)
        strangers = []
        for index in range(2 * SLOTS):
            stream = await anyio.connect_tcp("127.0.0.1", ingress.port)
            await raw_handshake(stream, new_key(), hello(f"inference-{100 + index}"))
            strangers.append(stream)  # completed the handshake, then silent
        await wait_for(
            lambda: "handshake.evicted" in logs.checks("secure_channel.connection_failed")
        )
        assert ingress.own_attest.made == []  # not one proof for a stranger

        honest = await LinkNode("inference-1", cloud).start(nursery)
        await honest.join(ingress)
        assert await ingress.ask_echo("inference-1", 1) == Pong(2)
        assert ingress.joined() == {"inference-1"}
        for stream in strangers:
            await stream.aclose()
        nursery.cancel_scope.cancel()
