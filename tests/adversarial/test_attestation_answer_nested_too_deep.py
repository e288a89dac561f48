"""Attack: the attestation answer is JSON nested deeper than the parser recurses.

Python's ``json`` recurses once per nesting level and raises
``RecursionError`` -- no ``ValueError`` -- on an answer of 50 000 brackets,
well within the 64 KiB cap. A client check that lets that escape ends in an
untyped error instead of the typed refusal every other bad answer gets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _hostile_ingress import head, hostile_https, verify_against
from _ingress_attestation import boot_ingress

from mantle import IngressCheck, IngressRefused


@pytest.mark.parametrize("body", [b"[" * 50_000, b'{"document": ' + b"[" * 50_000])
def test_a_deeply_nested_answer_is_a_typed_refusal(tmp_path: Path, body: bytes) -> None:
    node = boot_ingress(tmp_path)

    async def nested(nonce: bytes | None, stream: trio.abc.Stream) -> None:
        await stream.send_all(
            head("200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}") + body
        )

    async def run() -> IngressRefused | None:
        async with hostile_https(nested) as server:
            try:
                await verify_against(node, server)
            except IngressRefused as refused:
                return refused
        return None

    refused = trio.run(run)
    assert refused is not None and refused.check is IngressCheck.RESPONSE
