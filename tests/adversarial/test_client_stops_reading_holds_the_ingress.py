"""Attack: a client asks for a long streamed answer and then stops reading
(its receive window closes), to hold the ingress's connection, the request's
task and everything queued for it.

Hypercorn shields its socket writes from cancellation and gives them no
deadline, so neither the request's deadline nor a read timeout frees a
writer stuck against a zero window: without a write deadline the request
never ends on the ingress. With ``write_timeout_s`` (``TCP_USER_TIMEOUT``
on the listening socket, inherited by every accepted one) the kernel aborts
the connection once its data has waited that long, the request ends and its
submission is closed.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import Iterator

import pytest
from _ingress_kit import API_KEY, MODEL, RunningIngress, running_ingress

from actors.ingress import IngressLimits
from nodes.https import HttpsLimits

TWO_SECOND_TIMEOUTS = HttpsLimits(
    **{f.name: 2.0 for f in dataclasses.fields(HttpsLimits) if f.name.endswith("_timeout_s")}
)


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIngress]:
    yield from running_ingress(
        tmp_path_factory.mktemp("ingress"),
        IngressLimits(request_timeout_s=3.0),
        https_limits=TWO_SECOND_TIMEOUTS,
    )


def test_a_reader_that_stops_reading_is_cut_off(ingress: RunningIngress) -> None:
    body = json.dumps(
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": 8192,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    before = ingress.logs.getvalue().count('"http_request"')
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", ingress.endpoint.port))
    with raw, ingress.tls_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        # Never read. Generous bound: the deadline is 3 s, the write timeout 2 s.
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            ended = ingress.logs.getvalue().count('"http_request"') > before
            if ended and all(s.closed.is_set() for s in ingress.dispatcher.submissions):
                break
            time.sleep(0.2)
        assert ingress.logs.getvalue().count('"http_request"') > before, "the request never ended"
        assert ingress.dispatcher.submissions[-1].closed.is_set()
    with ingress.client(max_retries=0) as other:
        assert other.models.list().data, "the server keeps serving"
