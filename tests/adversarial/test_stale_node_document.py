"""The operator answers with documents made long before the client checks them
(a node clock held back, or documents stocked in advance): refused as stale."""

from __future__ import annotations

from pathlib import Path

import pytest
from _e2e_ingress_kit import MODEL, E2EIngress

import mantle
from protocol.attestation import Check

pytestmark = pytest.mark.anyio


async def test_a_stale_document_is_refused_and_nothing_is_sent(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path, nodes=1)

    def age(entries: list[dict[str, object]], nonce: bytes) -> list[dict[str, object]]:
        box.clock.advance(301)  # the documents were made 301 s before they are checked
        return entries

    box.rewrite_nodes = age
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        with pytest.raises(mantle.AttestationError) as refused:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
    assert refused.value.document_check is Check.FRESHNESS
    assert not box.relayed
