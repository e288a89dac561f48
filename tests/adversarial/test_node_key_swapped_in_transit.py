"""The operator swaps a node's static key in the nodes answer for one it holds:
the document binds the node's own key, so the swapped node is refused (bound
key) and, with no other node left, nothing is sealed or sent."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from _e2e_ingress_kit import MODEL, E2EIngress

import mantle
from nodes.random import SystemRandom
from protocol.attestation import Check
from protocol.noise import KeyPair, NoiseProtocol

pytestmark = pytest.mark.anyio
_DH = NoiseProtocol.from_name("Noise_N_25519_ChaChaPoly_BLAKE2s").dh


async def test_a_swapped_static_key_is_refused_and_nothing_is_sent(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path, nodes=1)
    attacker = KeyPair.generate(_DH, SystemRandom().token_bytes)

    def swap(entries: list[dict[str, object]], nonce: bytes) -> list[dict[str, object]]:
        return [{**e, "static_key": base64.b64encode(attacker.public).decode()} for e in entries]

    box.rewrite_nodes = swap
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        with pytest.raises(mantle.AttestationError) as refused:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
    assert refused.value.check is mantle.ClientCheck.NODE_DOCUMENT
    assert refused.value.document_check is Check.BOUND_KEY
    assert "/v1/mantle/chat" not in box.requests and not box.relayed


async def test_with_one_node_swapped_the_request_goes_only_to_the_honest_one(
    tmp_path: Path,
) -> None:
    box = E2EIngress(tmp_path, nodes=2)
    attacker = KeyPair.generate(_DH, SystemRandom().token_bytes)

    def swap_first(entries: list[dict[str, object]], nonce: bytes) -> list[dict[str, object]]:
        first = {**entries[0], "static_key": base64.b64encode(attacker.public).decode()}
        return [first, *entries[1:]]

    box.rewrite_nodes = swap_first
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        verified = await client.verify(MODEL)
    assert [node.name for node in verified.nodes] == ["inference-1"]
    assert verified.refused == (("inference-0", Check.BOUND_KEY.value),)
