"""The operator answers a client's new nonce with documents it captured over an
earlier one: refused by the nonce, nothing sent."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from _e2e_ingress_kit import MODEL, E2EIngress

import mantle
from protocol.attestation import Check

pytestmark = pytest.mark.anyio


async def test_documents_over_an_earlier_nonce_are_refused(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path, nodes=1)
    captured: list[list[dict[str, object]]] = []

    def capture_then_replay(
        entries: list[dict[str, object]], nonce: bytes
    ) -> list[dict[str, object]]:
        if not captured:
            captured.append(entries)
            return entries
        return captured[0]

    box.rewrite_nodes = capture_then_replay
    arguments = box.client_arguments(tmp_path)
    async with mantle.AsyncClient(**arguments) as client:
        await client.verify(MODEL)  # honest: the documents answer this nonce
    assert base64.b64decode(str(captured[0][0]["document"]))
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        with pytest.raises(mantle.AttestationError) as refused:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
    assert refused.value.document_check is Check.NONCE
    assert len(set(box.nonces)) == 2 and not box.relayed
