"""Attack: get request content into an error body or a log line by making
the request fail: plant a canary in every place a refusal could quote (an
unknown key, an unsupported parameter's value, a model name, a role, a part
type, a stop sequence, broken JSON, bytes that are not UTF-8, a nonce, an API
key, a path, a query string, a content type).

Every refusal is a fixed sentence naming parameters and limits only, built
outside any ``except`` block; the ingress logs the route, status and tenant
only. Neither the answers nor the logs may contain the canary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _ingress_kit import API_KEY, MODEL, RunningIngress, running_ingress

CANARY = "CANARY-echo-6b2e"
USER = [{"role": "user", "content": "hi"}]


def _json(**fields: Any) -> bytes:
    return json.dumps({"model": MODEL, "messages": USER, **fields}).encode()


BODIES: list[bytes] = [
    _json(**{CANARY: 1}),
    _json(tools=[{"type": "function", "function": {"name": CANARY}}]),
    _json(n=CANARY),
    _json(temperature=CANARY),
    _json(stop=[CANARY * 30]),
    _json(model=CANARY),
    _json(model=CANARY * 20),
    _json(messages=[{"role": CANARY, "content": "x"}]),
    _json(messages=[{"role": "user", "content": [{"type": CANARY}]}]),
    _json(messages=[{"role": "user", "content": "x", CANARY: "y"}]),
    _json(stream_options={CANARY: True}, stream=True),
    _json(response_format={"type": CANARY}),
    b'{"model": "' + CANARY.encode() + b'", "messages": [',
    b'{"model": "' + CANARY.encode() + b'\xff"}',
    b'{"' + CANARY.encode() + b'": 1, "' + CANARY.encode() + b'": 2}',
    b'{"x": 1' + b"9" * 400 + CANARY.encode() + b"}",
]
RESPONSES_BODIES: list[bytes] = [
    json.dumps({"model": MODEL, "input": CANARY, "store": True}).encode(),
    json.dumps({"model": MODEL, "input": "x", "previous_response_id": CANARY}).encode(),
    json.dumps({"model": MODEL, "input": [{"type": CANARY}]}).encode(),
    json.dumps({"model": MODEL, "input": "x", "instructions": 5, CANARY: 1}).encode(),
]


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIngress]:
    yield from running_ingress(tmp_path_factory.mktemp("ingress"))


def test_no_refusal_quotes_the_request(ingress: RunningIngress) -> None:
    auth = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    answers = []
    with ingress.http() as http:
        for body in BODIES:
            answers.append(http.post("/v1/chat/completions", content=body, headers=auth))
        for body in RESPONSES_BODIES:
            answers.append(http.post("/v1/responses", content=body, headers=auth))
        answers.append(http.get("/v1/attestation", params={"nonce": CANARY}))
        answers.append(http.get(f"/v1/{CANARY}", params={CANARY: CANARY}))
        answers.append(http.get("/v1/models", headers={"authorization": f"Bearer {CANARY}"}))
        answers.append(http.get("/v1/models", headers={"authorization": CANARY}))
        answers.append(
            http.post(
                "/v1/chat/completions",
                content=_json(),
                headers={**auth, "content-type": f"text/{CANARY}"},
            )
        )
    for answer in answers:
        assert 400 <= answer.status_code < 500
        assert CANARY not in answer.text, answer.text
        assert all(CANARY not in value for value in answer.headers.values())
        if answer.headers.get("content-type") == "application/json":
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert len(answers) == len(BODIES) + len(RESPONSES_BODIES) + 5
    deadline = time.monotonic() + 5  # the last line is written after its answer went out
    while ingress.logs.getvalue().count('"http_request"') < len(answers):
        assert time.monotonic() < deadline, "every request is logged (by route and status)"
        time.sleep(0.01)
    logs = ingress.logs.getvalue()
    assert CANARY not in logs
