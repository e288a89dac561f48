"""The ingress end to end: the official ``openai`` SDK against the real
hypercorn TLS server running the real app, over a dispatcher driving the real
``InferenceActor`` on ``ScriptedEngine``.

Covers the models list, chat completions and responses (whole and streamed,
usage, ``max_tokens`` ending ``length``, stop sequences), the admission
errors (404, 429 with ``Retry-After``, 503), authentication (401), limits
(413 seen by the SDK as a status error), refusals naming the parameter,
a stream failing after it started, a client leaving mid-stream, hostile HTTP
answered clearly while the server keeps serving (a slow body:
``tests/adversarial/test_slow_body_holds_the_ingress.py``), the attestation, health and
``/ct/v1/`` routes, and a canary prompt that never reaches the logs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from _ingress_kit import API_KEY, MODEL, RunningIngress, running_ingress
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from actors.ingress import IngressLimits
from actors.seams.engine import CancelToken, GenerationParams
from protocol.attestation import tls_key_binding
from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, Role
from protocol.openai import ApiLimits
from simulations.engine import ScriptedEngine

CANARY = "CANARY-ingress-4c1d which mountain is the tallest"
LIMITS = IngressLimits(
    api=ApiLimits(max_body_bytes=64 * 1024),
    body_read_timeout_s=1.5,
    max_discard_bytes=1024 * 1024,
)
USER = [{"role": "user", "content": CANARY}]


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIngress]:
    yield from running_ingress(tmp_path_factory.mktemp("ingress"), LIMITS)


@pytest.fixture
def client(ingress: RunningIngress) -> Iterator[openai.OpenAI]:
    with ingress.client(max_retries=0) as c:
        yield c


@pytest.fixture(autouse=True)
def _reset_knobs(ingress: RunningIngress) -> Iterator[None]:
    yield
    d = ingress.dispatcher
    d.overloaded_retry_after, d.no_capacity, d.fail_after_chunks = None, False, None
    d.stall_after_chunks = None


def _expected_words(content: str, max_tokens: int, seed: int, role: Role = Role.USER) -> list[str]:
    chunks = ScriptedEngine(MODEL).generate(
        [ChatTurn(role, CustomerData(content))],
        GenerationParams(max_tokens, 1.0, 1.0, seed),
        CancelToken(),
    )
    return [c.text.reveal_text() for c in chunks]


def _raw(ingress: RunningIngress, request: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes over TLS and read the answer until the server closes
    (or the first complete response, for keep-alive answers)."""
    with ingress.tls_socket(timeout) as tls:
        tls.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or not _complete(data):
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


# --- the API through the SDK -----------------------------------------------------------


def test_models_are_listed(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


def test_chat_completion_with_usage_and_length(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=6, seed=11)  # type: ignore[arg-type]
    assert out.object == "chat.completion"
    assert out.choices[0].message.content == "".join(_expected_words(CANARY, 6, 11))
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 6
    assert out.usage.total_tokens == out.usage.prompt_tokens + 6


def test_chat_stream_with_include_usage_ends_with_a_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=USER,  # type: ignore[arg-type]
            max_completion_tokens=4,
            seed=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(_expected_words(CANARY, 4, 5))
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "length" and set(finals[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2, stream=True)  # type: ignore[arg-type]
    )
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


@pytest.mark.skipif(
    "stop" not in GenerationParams.__dataclass_fields__,
    reason="stop sequences are honoured by the engine side (GenerationParams.stop)",
)
def test_stop_sequence_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    words = _expected_words(CANARY, 12, 3)
    stop = next(w for i, w in enumerate(words) if i >= 2 and w not in words[:i])
    out = client.chat.completions.create(
        model=MODEL,
        messages=USER,  # type: ignore[arg-type]
        max_tokens=12,
        seed=3,
        stop=[stop],
    )
    assert out.choices[0].message.content == "".join(words[: words.index(stop)])
    assert out.choices[0].finish_reason == "stop"


def test_responses_whole_and_streamed(client: openai.OpenAI) -> None:
    whole = client.responses.create(
        model=MODEL, input=CANARY, instructions="be brief", max_output_tokens=3, temperature=0.5
    )
    assert whole.object == "response" and whole.status == "incomplete"
    assert whole.incomplete_details is not None
    assert whole.incomplete_details.reason == "max_output_tokens"
    assert whole.usage is not None and whole.usage.output_tokens == 3
    assert len(whole.output_text.split()) == 3
    assert whole.model_dump().get("store") is False

    events = list(
        client.responses.create(
            model=MODEL, input=[{"role": "user", "content": CANARY}], stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",  # the default max_output_tokens was reached
    ]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert deltas == done.text and deltas
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    assert final.usage is not None and final.output_text == deltas


def test_responses_stream_reaching_max_output_tokens_is_incomplete(
    client: openai.OpenAI,
) -> None:
    events = list(
        client.responses.create(model=MODEL, input=CANARY, stream=True, max_output_tokens=2)
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage.output_tokens == 2  # type: ignore[union-attr]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=USER)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found"
    assert "no-such-model" not in str(caught.value.body)


def test_bad_api_key_is_401(ingress: RunningIngress) -> None:
    with ingress.client(api_key="mk-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]


def test_overloaded_is_429_with_retry_after(ingress: RunningIngress, client: openai.OpenAI) -> None:
    ingress.dispatcher.overloaded_retry_after = 2.5
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "3"


def test_no_capacity_is_503(ingress: RunningIngress, client: openai.OpenAI) -> None:
    ingress.dispatcher.no_capacity = True
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.create(model=MODEL, input="x")
    assert caught.value.status_code == 503


def test_oversized_body_reaches_the_sdk_as_413(client: openai.OpenAI) -> None:
    big = "x" * (LIMITS.api.max_body_bytes + 1000)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": big}])
    assert caught.value.status_code == 413
    # and the connection pool keeps working
    assert client.models.list().data


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
    ],
)
def test_unsupported_chat_parameter_is_a_400_naming_it(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=USER, **extra)  # type: ignore[arg-type]
    assert caught.value.param == param
    assert caught.value.code == "unsupported_parameter"


def test_defaults_of_unsupported_parameters_are_accepted(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "developer", "content": "x"}, *USER],  # type: ignore[list-item]
        n=1,
        logprobs=False,
        response_format={"type": "text"},
        user="end-user-7",
        max_tokens=1,
    )
    assert out.choices[0].finish_reason == "length"


def test_responses_conversation_state_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", store=True)
    assert caught.value.param == "store"
    assert "no conversation state" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_1")
    assert caught.value.param == "previous_response_id"
    assert client.responses.create(model=MODEL, input="x", store=False, max_output_tokens=1)


def test_max_tokens_above_the_limit_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=10**6)  # type: ignore[arg-type]
    assert caught.value.param == "max_tokens"


# --- streams that fail, clients that leave ----------------------------------------------


def test_a_chat_stream_failing_after_it_started_raises_api_error(
    ingress: RunningIngress, client: openai.OpenAI
) -> None:
    ingress.dispatcher.fail_after_chunks = 2
    seen: list[str] = []
    stream = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8, stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert len([s for s in seen if s]) == 2
    assert "cluster" in caught.value.message
    assert not isinstance(caught.value, openai.APIConnectionError)


def test_a_responses_stream_failing_after_it_started_ends_with_error_events(
    ingress: RunningIngress, client: openai.OpenAI
) -> None:
    ingress.dispatcher.fail_after_chunks = 1
    events = list(client.responses.create(model=MODEL, input=CANARY, stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"  # type: ignore[union-attr]


def test_a_client_leaving_mid_stream_closes_its_submission(ingress: RunningIngress) -> None:
    before = len(ingress.dispatcher.submissions)
    body = {"model": MODEL, "messages": USER, "max_tokens": 4000, "stream": True}
    with (
        ingress.http() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {API_KEY}"},
        ) as response,
    ):
        assert response.status_code == 200
        next(response.iter_bytes())
    submission = ingress.dispatcher.submissions[before]
    deadline = time.monotonic() + 10
    while not submission.closed.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert submission.closed.is_set(), "the submission was not closed"
    assert submission.replies < 4000


# --- hostile HTTP ------------------------------------------------------------------------


def _post(ingress: RunningIngress, body: bytes, content_type: str = "application/json") -> Any:
    with ingress.http() as http:
        return http.post(
            "/v1/chat/completions",
            content=body,
            headers={"authorization": f"Bearer {API_KEY}", "content-type": content_type},
        )


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"model": "m", "messages": [', "application/json", 400, "invalid_json"),
        (b"\xff\xfe{}", "application/json", 400, "invalid_encoding"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 413, "request_too_large"),
        (b"[" * 5_000 + b"]" * 5_000, "application/json", 400, "invalid_json"),
        (
            b'{"model": "m", "max_tokens": ' + b"9" * 5000 + b"}",
            "application/json",
            400,
            "invalid_json",
        ),
        (b'{"model": "m", "temperature": 1e400}', "application/json", 400, "invalid_json"),
        (b'{"model": "m", "temperature": NaN}', "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_json"),
        (b'{"model": "m"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"model": "m"}', "application/json; charset=latin-1", 415, "unsupported_media_type"),
    ],
)
def test_hostile_bodies_get_clear_errors(
    ingress: RunningIngress, body: bytes, content_type: str, status: int, code: str
) -> None:
    response = _post(ingress, body, content_type)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_many_headers_are_431_and_huge_headers_are_refused(ingress: RunningIngress) -> None:
    with ingress.http() as http:
        many = {f"x-h{i}": "v" for i in range(LIMITS.max_headers + 5)}
        response = http.get("/v1/models", headers={"authorization": f"Bearer {API_KEY}", **many})
        assert response.status_code == 431
    huge = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    answer = _raw(ingress, huge)
    assert answer == b"" or answer.split(b" ", 2)[1] in (b"400", b"431")
    assert _post(ingress, b"{}").status_code == 400  # still serving


def test_wrong_method_and_unknown_route(ingress: RunningIngress) -> None:
    with ingress.http() as http:
        assert http.get("/v1/chat/completions").status_code == 405
        assert http.get("/v1/nothing").json()["error"]["code"] == "not_found"


# --- the other routes -------------------------------------------------------------------


def test_attestation_returns_a_fresh_document_and_the_tls_binding(ingress: RunningIngress) -> None:
    nonce = bytes(range(32))
    with ingress.http() as http:
        reply = http.get("/v1/attestation", params={"nonce": nonce.hex()})
        assert reply.status_code == 200
        for bad in ("00" * 31, "00" * 65, "zz" * 32, "0" * 65):
            assert http.get("/v1/attestation", params={"nonce": bad}).status_code == 400
        assert http.get("/v1/attestation").status_code == 400
    body = reply.json()
    assert ingress.attestation_nonces[-1] == nonce
    import base64

    assert base64.b64decode(body["document"]) == b"document-over:" + nonce
    cert = x509.load_pem_x509_certificate(ingress.cert_path.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki == ingress.endpoint.spki_der
    assert body["tls_key_binding"] == tls_key_binding(spki).hex()
    assert body["tls_spki_sha256"] == hashlib.sha256(spki).hexdigest()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)


def test_health_and_ct_routes(ingress: RunningIngress) -> None:
    with ingress.http() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/ct/v1/get-sth").json() == {"ct": True}


def test_the_canary_prompt_never_reaches_the_logs(
    ingress: RunningIngress, client: openai.OpenAI, capfd: pytest.CaptureFixture[str]
) -> None:
    client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)  # type: ignore[arg-type]
    list(client.responses.create(model=MODEL, input=CANARY, stream=True, max_output_tokens=2))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=USER, tools=[])  # type: ignore[arg-type]
    _post(ingress, json.dumps({"model": MODEL, "messages": USER, CANARY: 1}).encode())
    logs = ingress.logs.getvalue()
    captured = capfd.readouterr()
    assert "http_request" in logs
    for text in (logs, captured.out, captured.err):
        assert "CANARY" not in text
        assert "mountain" not in text


def test_requests_reach_the_dispatcher_with_the_tenant(ingress: RunningIngress) -> None:
    with ingress.http() as http:
        ok = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": USER, "max_tokens": 1},
            headers={"authorization": f"Bearer {API_KEY}"},
        )
    assert ok.status_code == 200
    assert ingress.dispatcher.tenants_seen[-1] == "tenant-a"


# --- deadlines ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hurried(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIngress]:
    yield from running_ingress(
        tmp_path_factory.mktemp("hurried"), IngressLimits(request_timeout_s=0.5)
    )


def test_a_stalled_request_ends_504_and_a_stalled_stream_with_an_error_event(
    hurried: RunningIngress,
) -> None:
    hurried.dispatcher.stall_after_chunks = 0
    with hurried.client(max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
        assert caught.value.status_code == 504
        hurried.dispatcher.stall_after_chunks = 2
        seen = 0
        with pytest.raises(openai.APIError) as failed:
            for chunk in client.chat.completions.create(
                model=MODEL,
                messages=USER,  # type: ignore[arg-type]
                stream=True,
            ):
                seen += bool(chunk.choices[0].delta.content)
        assert seen == 2 and "ran out of time" in failed.value.message
    for submission in hurried.dispatcher.submissions:
        assert submission.closed.is_set(), "a request past its deadline is cancelled"


def test_the_tls_key_is_never_written(ingress: RunningIngress) -> None:
    assert [p.name for p in ingress.cert_path.parent.iterdir()] == [ingress.cert_path.name]
    assert b"PRIVATE KEY" not in ingress.cert_path.read_bytes()
