"""Attack (on I7, by an ordinary client): a non-streaming request whose
answer takes longer than the HTTPS server's read timeout. The client has
sent its whole request and waits, sending nothing; hypercorn's read timeout
counts that silence, closes the connection and reports it to the
application as a disconnect, so the request is cancelled and its client
gets no answer at all — neither the completion nor an error.

Here every connection timeout of :class:`HttpsLimits` is one second and the
answer (the ingress's own 504, the node being stalled) comes after three:
the client receives it. Headers stay bounded by the keep-alive timer, bodies
by the application's body deadline, writes by ``write_timeout_s``.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import time
from collections.abc import Iterator

import pytest
from _ingress_kit import API_KEY, MODEL, RunningIngress, running_ingress

from actors.ingress import IngressLimits
from nodes.https import HttpsLimits

ONE_SECOND_TIMEOUTS = HttpsLimits(
    **{f.name: 1.0 for f in dataclasses.fields(HttpsLimits) if f.name.endswith("_timeout_s")}
)


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIngress]:
    yield from running_ingress(
        tmp_path_factory.mktemp("ingress"),
        IngressLimits(request_timeout_s=3.0),
        https_limits=ONE_SECOND_TIMEOUTS,
    )


def test_a_client_waiting_for_its_answer_receives_it(ingress: RunningIngress) -> None:
    ingress.dispatcher.stall_after_chunks = 0  # the node takes longer than the deadline
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    started = time.monotonic()
    answer = b""
    with ingress.tls_socket(timeout=20) as tls:
        tls.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        while b"}}" not in answer:
            try:
                piece = tls.recv(65536)
            except (ConnectionError, ssl.SSLError):
                break
            if not piece:
                break
            answer += piece
    ingress.dispatcher.stall_after_chunks = None
    assert answer.startswith(b"HTTP/1.1 504"), (time.monotonic() - started, answer[:60])
    assert b'"code":"timeout"' in answer


def test_headers_dripped_slowly_are_still_cut_off(ingress: RunningIngress) -> None:
    """Without a read timeout, the keep-alive timer (running from the
    connection's start until the headers are complete) bounds slow headers."""
    started = time.monotonic()
    closed = False
    with ingress.tls_socket(timeout=0.2) as tls:
        tls.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        while time.monotonic() - started < 20 and not closed:
            try:
                tls.sendall(b"X-Drip: 1\r\n")
                closed = tls.recv(65536) == b""
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError, OSError):
                closed = True
    assert closed
    # Generous bound: the keep-alive timeout is 1 s.
    assert time.monotonic() - started < 20
