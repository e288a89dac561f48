"""A node booted from a release the client's pins do not vouch for (another
signers' release 2 of the same model, on the same cloud) is refused by its
PCRs: the client admits only the release it verified."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from _e2e_ingress_kit import MODEL, E2EIngress

import mantle
from protocol.attestation import Check

pytestmark = pytest.mark.anyio


async def test_a_document_of_an_unlisted_release_is_refused(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path / "genuine", nodes=1)
    other = E2EIngress(tmp_path / "unlisted", nodes=1, version=2)  # same simulated cloud
    rogue = other.nodes[0]

    def replace(entries: list[dict[str, object]], nonce: bytes) -> list[dict[str, object]]:
        return [
            {
                "node": "inference-0",
                "document": base64.b64encode(rogue.document(nonce)).decode(),
                "kind": "nitro",
                "static_key": base64.b64encode(rogue.custody.static_public).decode(),
            }
        ]

    box.rewrite_nodes = replace
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        with pytest.raises(mantle.AttestationError) as refused:
            await client.verify(MODEL)
    assert refused.value.check is mantle.ClientCheck.NODE_DOCUMENT
    assert refused.value.document_check is Check.PCR_POLICY
    assert not box.relayed
