"""Attack: the server behind the pinned certificate drips its attestation answer.

One byte every 200 ms never trips an HTTP client's read timeout (each read
gets something), and 64 KiB at that pace take some three and a half hours:
the client's check would hang on the operator's server for as long as the
operator likes. ``verify_ingress`` bounds the whole exchange
(``deadline_s``) and refuses when it passes.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio
from _hostile_ingress import head, hostile_https, verify_against
from _ingress_attestation import boot_ingress

from mantle import IngressCheck, IngressRefused


def test_a_dripped_answer_ends_at_the_deadline(tmp_path: Path) -> None:
    node = boot_ingress(tmp_path)

    async def drip(nonce: bytes | None, stream: trio.abc.Stream) -> None:
        await stream.send_all(
            head("200 OK", "Content-Type: application/json", "Content-Length: 65536")
        )
        await stream.send_all(b'{"document": "')
        while True:
            await trio.sleep(0.2)
            await stream.send_all(b"A")

    async def run() -> IngressRefused | None:
        async with hostile_https(drip) as server:
            try:
                with trio.fail_after(30):
                    await verify_against(node, server, deadline_s=2.0)
            except IngressRefused as refused:
                return refused
        return None

    started = time.monotonic()
    refused = trio.run(run)
    assert refused is not None and refused.check is IngressCheck.TIMEOUT
    assert time.monotonic() - started < 20
