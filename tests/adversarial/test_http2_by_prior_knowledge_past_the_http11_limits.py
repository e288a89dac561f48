"""Attack: a client opens HTTP/2 on the ingress's TLS port although ALPN
offers only ``http/1.1`` — by prior knowledge (the ``PRI *`` preface) or
with ``Upgrade: h2c`` — to multiplex a hundred requests on one connection
past the HTTP/1.1 limits the ingress was built around (one request at a time
per connection, h11's header bound).

Hypercorn honours both switches whatever ALPN said. The server therefore
allows one stream at a time with the HTTP/1.1 header bound, and the
application answers every HTTP/2 request 505 naming the check, without
routing, authenticating or reading it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from _ingress_kit import API_KEY, RunningIngress, running_ingress


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIngress]:
    yield from running_ingress(tmp_path_factory.mktemp("ingress"))


def _h2_exchange(ingress: RunningIngress, *, upgrade: bool) -> tuple[int, dict[str, object], int]:
    """One request over HTTP/2: (status, error body, the server's stream limit)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with ingress.tls_socket() as tls:
        if upgrade:
            settings = conn.initiate_upgrade_connection()
            tls.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                piece = tls.recv(1)
                assert piece, "the server closed instead of answering"
                head += piece
            assert head.startswith(b"HTTP/1.1 101"), head[:40]
            stream_id = 1  # the upgraded request
            tls.sendall(conn.data_to_send())
        else:
            conn.initiate_connection()
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(
                stream_id,
                [
                    (":method", "GET"),
                    (":path", "/v1/models"),
                    (":scheme", "https"),
                    (":authority", "x"),
                    ("authorization", "Bearer " + API_KEY),
                ],
                end_stream=True,
            )
            tls.sendall(conn.data_to_send())
        status = 0
        body = b""
        ended = False
        while not ended:
            data = tls.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    ended = True
            tls.sendall(conn.data_to_send())
        limit = conn.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS]
    return status, json.loads(body) if body else {}, limit


@pytest.mark.parametrize("upgrade", [False, True], ids=["prior-knowledge", "h2c-upgrade"])
def test_http2_gets_one_stream_and_a_505(ingress: RunningIngress, upgrade: bool) -> None:
    status, body, limit = _h2_exchange(ingress, upgrade=upgrade)
    assert status == 505
    assert body["error"]["code"] == "http_version_not_supported"  # type: ignore[index]
    assert limit == 1
    with ingress.client(max_retries=0) as client:
        assert client.models.list().data, "HTTP/1.1 clients are served as before"
