"""Attack: a client sends its request body a byte at a time (slowloris), to
hold a connection and a request slot on the ingress for as long as it likes.

Each byte arrives well within hypercorn's per-read timeout, so only a
deadline on the whole body stops it: the ingress answers 408 once
``body_read_timeout_s`` has passed since the body began, closes the
connection, and serves other clients meanwhile.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import pytest
from _ingress_kit import API_KEY, RunningIngress, running_ingress

from actors.ingress import IngressLimits

LIMITS = IngressLimits(body_read_timeout_s=1.0)


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIngress]:
    yield from running_ingress(tmp_path_factory.mktemp("ingress"), LIMITS)


def test_a_slow_body_is_answered_408_and_others_are_served_meanwhile(
    ingress: RunningIngress,
) -> None:
    started = time.monotonic()
    answer = b""
    with ingress.tls_socket() as tls:
        tls.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )
        with ingress.client(max_retries=0) as other:
            assert other.models.list().data, "another client is served meanwhile"
        tls.settimeout(0.2)
        sent = 1
        while b"request_timeout" not in answer and time.monotonic() - started < 10:
            try:
                if not answer:
                    tls.sendall(b" ")
                    sent += 1
                answer += tls.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:40]
    assert b"request_timeout" in answer
    assert sent < 100_000
    # Generous bound: the deadline is 1 s, so the answer comes long before 10 s.
    assert time.monotonic() - started < 10
    with ingress.client(max_retries=0) as after:
        assert after.models.list().data, "the server keeps serving"
