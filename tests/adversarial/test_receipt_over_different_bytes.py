"""A receipt over other bytes than the answer the client received, or signed
by a key no verified document bound, is refused: the answer is not returned."""

from __future__ import annotations

from pathlib import Path

import pytest
from _e2e_ingress_kit import MODEL, E2EIngress
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import mantle

pytestmark = pytest.mark.anyio
USER = [{"role": "user", "content": "hi"}]


async def test_a_receipt_over_another_text_is_refused(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path, nodes=1)
    box.receipt_text_override = "a different answer"
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        with pytest.raises(mantle.AttestationError) as refused:
            await client.chat.completions.create(model=MODEL, messages=USER)
        assert refused.value.check is mantle.ClientCheck.RECEIPT
        assert "receipt.response" in str(refused.value)
        stream = await client.chat.completions.create(model=MODEL, messages=USER, stream=True)
        with pytest.raises(mantle.AttestationError) as streamed:
            async for _ in stream:
                pass
    assert streamed.value.check is mantle.ClientCheck.RECEIPT and stream.receipt is None


async def test_a_receipt_from_an_unattested_key_is_refused(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path, nodes=1)
    box.receipt_key_override = Ed25519PrivateKey.generate()
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        with pytest.raises(mantle.AttestationError) as refused:
            await client.chat.completions.create(model=MODEL, messages=USER)
    assert refused.value.check is mantle.ClientCheck.RECEIPT
    assert "no verified node" in str(refused.value)


async def test_a_dropped_record_is_refused(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path, nodes=1)
    box.rewrite_records = lambda records: records[1:]
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        with pytest.raises(mantle.AttestationError) as refused:
            await client.chat.completions.create(model=MODEL, messages=USER)
    assert refused.value.check is mantle.ClientCheck.RESPONSE
