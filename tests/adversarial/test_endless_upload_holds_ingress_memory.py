"""Attack: upload a request body that never ends (chunked, no length), or
declares a huge length, to make the ingress buffer it or read forever.

The ingress keeps at most ``api.max_body_bytes`` of a body; past that it
drops what arrives (so an ordinary client that sent a little too much still
reads its 413 instead of a reset), and past ``max_discard_bytes`` it answers
413 and closes the connection. A declared length above that is answered at
once.
"""

from __future__ import annotations

import select
from collections.abc import Iterator

import openai
import pytest
from _ingress_kit import API_KEY, MODEL, RunningIngress, running_ingress

from actors.ingress import IngressLimits
from protocol.openai import ApiLimits

LIMITS = IngressLimits(api=ApiLimits(max_body_bytes=32 * 1024), max_discard_bytes=8 * 1024 * 1024)
HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
)


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIngress]:
    yield from running_ingress(tmp_path_factory.mktemp("ingress"), LIMITS)


def test_an_endless_chunked_body_is_cut_off_with_413(ingress: RunningIngress) -> None:
    chunk = b"x" * 16384
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    answer = b""
    with ingress.tls_socket() as tls:
        tls.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        while sent < 64 * 1024 * 1024:
            readable, _, _ = select.select([tls], [], [], 0)
            if readable or tls.pending():
                answer = tls.recv(65536)
                break
            try:
                tls.sendall(framed)
            except (ConnectionError, OSError):
                answer = b"closed"
                break
            sent += len(chunk)
        if answer == b"closed":
            answer = tls.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:40]
    # It stopped reading soon after the discard cap, not at the end of the upload.
    assert sent < 4 * LIMITS.max_discard_bytes


def test_a_huge_declared_length_is_answered_at_once(ingress: RunningIngress) -> None:
    with ingress.tls_socket() as tls:
        tls.sendall(HEAD + b"Content-Length: 100000000000\r\n\r\n{")
        answer = tls.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in answer.lower()


def test_a_little_too_much_reaches_the_sdk_as_a_413_and_the_server_serves_on(
    ingress: RunningIngress,
) -> None:
    with ingress.client(max_retries=0) as client:
        # Larger than the socket buffers hold: answering before the upload is
        # over and closing would reset the SDK mid-upload.
        too_big = "y" * (6 * 1024 * 1024)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": too_big}]
            )
        assert caught.value.status_code == 413
        assert client.models.list().data
