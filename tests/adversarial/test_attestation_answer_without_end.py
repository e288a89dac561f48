"""Attack: the server behind the pinned certificate answers the attestation route without end.

The certificate a client pins is handed over by whoever runs the cluster, so
the server that answers ``/v1/attestation`` may be the operator's own; it is
``verify_ingress`` that finds out. Its answer is capped at 64 KiB -- a cap
worth something only if it is applied while reading: checked on a body
already read whole, an endless answer takes the client's memory first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _hostile_ingress import head, hostile_https, verify_against
from _ingress_attestation import boot_ingress

from mantle import IngressCheck, IngressRefused

#: What the server offers to send; the client must stop reading long before.
OFFERED = 192 * 1024 * 1024
#: The cap plus what the sockets' buffers may take on the loopback.
READ_AT_MOST = 32 * 1024 * 1024


@pytest.mark.parametrize("framing", ["until_close", "chunked", "huge_length"])
def test_an_endless_answer_is_refused_without_reading_it(tmp_path: Path, framing: str) -> None:
    node = boot_ingress(tmp_path)
    block = b"A" * (64 * 1024)

    async def endless(nonce: bytes | None, stream: trio.abc.Stream) -> None:
        if framing == "chunked":
            await stream.send_all(head("200 OK", "Transfer-Encoding: chunked"))
            frame = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        else:
            length = (
                "Connection: close" if framing == "until_close" else f"Content-Length: {OFFERED}"
            )
            await stream.send_all(head("200 OK", "Content-Type: application/json", length))
            frame = block
        sent = 0
        while sent < OFFERED:
            await stream.send_all(frame)
            sent += len(block)

    async def run() -> tuple[IngressRefused | None, int]:
        async with hostile_https(endless) as server:
            try:
                with trio.fail_after(120):
                    await verify_against(node, server)
            except IngressRefused as refused:
                return refused, server.sent
            return None, server.sent

    refused, sent = trio.run(run)
    assert refused is not None and refused.check is IngressCheck.RESPONSE
    assert sent < READ_AT_MOST
