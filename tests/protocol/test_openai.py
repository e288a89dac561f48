"""The OpenAI-compatible API as pure functions: validation in, SDK shapes out.

Rendered bytes are checked against the official ``openai`` SDK's own models
(validated, not constructed), so a missing or mistyped field fails here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from protocol.attestation import noise_key_binding, tls_key_binding
from protocol.customer_data import CustomerData
from protocol.inference import MAX_TOKENS_LIMIT, FinishReason, Role
from protocol.openai import (
    ApiLimits,
    ChatStreamRenderer,
    OpenAIRequestError,
    RequestCheck,
    ResponseRenderer,
    Usage,
    parse_chat_request,
    parse_responses_request,
    render_chat_completion,
    render_error,
)

LIMITS = ApiLimits()
CANARY = "CANARY-openai-91ab"
USER = [{"role": "user", "content": "hello"}]


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": "m", "messages": USER, **fields}).encode()


def _refusal(body: bytes, *, responses: bool = False) -> OpenAIRequestError:
    parse = parse_responses_request if responses else parse_chat_request
    with pytest.raises(OpenAIRequestError) as caught:
        parse(body, limits=LIMITS, default_seed=1)
    error = caught.value
    assert error.__context__ is None and error.__cause__ is None
    return error


# --- chat requests ------------------------------------------------------------------------


def test_a_chat_request_becomes_a_generate_request() -> None:
    body = json.dumps(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "rules"},
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {"role": "assistant", "content": "earlier"},
                {"role": "user", "content": CANARY},
            ],
            "max_completion_tokens": 7,
            "temperature": 0,
            "top_p": 0.5,
            "seed": 99,
            "stop": ["x", "yz"],
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "someone",
        }
    ).encode()
    parsed = parse_chat_request(body, limits=LIMITS, default_seed=1)
    g = parsed.generate
    assert [t.role for t in g.turns] == [Role.SYSTEM, Role.SYSTEM, Role.ASSISTANT, Role.USER]
    assert [t.content.reveal_text() for t in g.turns] == ["rules", "ab", "earlier", CANARY]
    assert (g.max_tokens, g.temperature, g.top_p, g.seed) == (7, 0.0, 0.5, 99)
    assert [s.reveal_text() for s in g.stop] == ["x", "yz"]
    assert parsed.stream and parsed.include_usage
    assert CANARY not in repr(parsed)


def test_defaults_fill_what_the_request_leaves_out() -> None:
    parsed = parse_chat_request(_chat(), limits=LIMITS, default_seed=1234)
    g = parsed.generate
    assert (g.max_tokens, g.temperature, g.top_p, g.seed, g.stop) == (
        LIMITS.default_max_tokens,
        1.0,
        1.0,
        1234,
        (),
    )
    assert not parsed.stream and not parsed.include_usage
    assert parse_chat_request(_chat(stop="s"), limits=LIMITS, default_seed=1).generate.stop


@pytest.mark.parametrize(
    "name",
    [
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "logit_bias",
        "top_logprobs",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "service_tier",
        "metadata",
        "web_search_options",
    ],
)
def test_every_unsupported_chat_parameter_is_refused_by_name(name: str) -> None:
    error = _refusal(_chat(**{name: "anything"}))
    assert (error.check, error.param, error.status) == (
        RequestCheck.UNSUPPORTED_PARAMETER,
        name,
        400,
    )
    assert name in error.message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("response_format", {"type": "json_object"}),
        ("store", True),
        ("parallel_tool_calls", True),
    ],
)
def test_defaults_only_parameters_refuse_other_values(name: str, value: object) -> None:
    assert _refusal(_chat(**{name: value})).param == name
    default = {"n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0}
    if name in default:
        parse_chat_request(_chat(**{name: default[name]}), limits=LIMITS, default_seed=1)


def test_a_true_is_not_a_one() -> None:
    assert _refusal(_chat(n=True)).param == "n"


def test_unknown_keys_are_refused_without_being_quoted() -> None:
    error = _refusal(_chat(**{CANARY: 1}))
    assert error.check is RequestCheck.UNKNOWN_PARAMETER and error.param is None
    assert CANARY not in render_error(error).decode()
    nested = _refusal(
        json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "x", CANARY: 1}]}
        ).encode()
    )
    assert CANARY not in render_error(nested).decode()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x", "name": "n"}]}, "messages[0].name"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_unsupported_message_features_are_named(fields: dict[str, Any], param: str) -> None:
    error = _refusal(json.dumps({"model": "m", **fields}).encode())
    assert (error.check, error.param) == (RequestCheck.UNSUPPORTED_PARAMETER, param)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": MAX_TOKENS_LIMIT + 1}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"max_tokens": 5, "max_completion_tokens": 5}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"stop": ["a"] * 5}, "stop"),
        ({"stop": ""}, "stop"),
        ({"stop": ["x" * 257]}, "stop"),
        ({"stop": [1]}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": ""}, "model"),
        ({"model": "m" * 129}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"user": 5}, "user"),
    ],
)
def test_invalid_values_name_their_parameter(fields: dict[str, Any], param: str) -> None:
    error = _refusal(_chat(**fields))
    assert error.param == param, error.message
    assert error.status == 400


def test_missing_model_and_messages() -> None:
    assert _refusal(b'{"messages": []}').check is RequestCheck.MISSING_PARAMETER
    assert _refusal(b'{"model": "m"}').param == "messages"


def test_message_count_and_text_sizes_are_bounded() -> None:
    limits = ApiLimits(max_messages=3, max_text_chars=10, max_total_text_chars=15)

    def parse(messages: list[dict[str, Any]]) -> OpenAIRequestError:
        with pytest.raises(OpenAIRequestError) as caught:
            parse_chat_request(
                json.dumps({"model": "m", "messages": messages}).encode(),
                limits=limits,
                default_seed=1,
            )
        return caught.value

    assert parse([{"role": "user", "content": "x"}] * 4).check is RequestCheck.TOO_LARGE
    assert parse([{"role": "user", "content": "x" * 11}]).param == "messages[0].content"
    assert parse([{"role": "user", "content": "x" * 8}] * 2).param == "messages"
    with pytest.raises(OpenAIRequestError) as caught:
        parse_chat_request(b" " * (LIMITS.max_body_bytes + 1), limits=LIMITS, default_seed=1)
    assert caught.value.status == 413


# --- hostile JSON -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "check"),
    [
        (b"\xff", RequestCheck.ENCODING),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
            RequestCheck.ENCODING,
        ),
        (b'{"model": "m", "model": "n"}', RequestCheck.JSON),
        (b'{"model": NaN}', RequestCheck.JSON),
        (b'{"model": Infinity}', RequestCheck.JSON),
        (b'{"t": 1e999}', RequestCheck.JSON),
        (b'{"t": ' + b"1" * 40 + b"}", RequestCheck.JSON),
        (b'{"t": 0.' + b"1" * 40 + b"}", RequestCheck.JSON),
        (b"[" * 50_000 + b"]" * 50_000, RequestCheck.NESTING),
        (b'{"a":' * 17 + b"1" + b"}" * 17, RequestCheck.NESTING),
        (b"[]", RequestCheck.NOT_AN_OBJECT),
        (b"", RequestCheck.JSON),
        (b'{"model": "m"} trailing', RequestCheck.JSON),
    ],
)
def test_hostile_json_is_refused_by_check(body: bytes, check: RequestCheck) -> None:
    assert _refusal(body).check is check
    assert _refusal(body, responses=True).check is check


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["model", "messages", "input", "max_tokens", "stop", "stream", "stream_options", "seed", "n"]
)


@given(st.dictionaries(_keys, _json_values, max_size=6), st.booleans())
def test_any_json_object_is_parsed_or_refused_with_a_typed_error(
    body: dict[str, object], responses: bool
) -> None:
    parse = parse_responses_request if responses else parse_chat_request
    try:
        parse(json.dumps(body).encode(), limits=LIMITS, default_seed=1)
    except OpenAIRequestError as exc:
        assert exc.__context__ is None
        assert 400 <= exc.status < 500


# --- responses requests -------------------------------------------------------------------


def test_a_responses_request_with_instructions_and_items() -> None:
    body = json.dumps(
        {
            "model": "m",
            "instructions": "sys",
            "input": [
                {"role": "user", "content": "q1"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "a1"}],
                },
                {"role": "user", "content": [{"type": "input_text", "text": CANARY}]},
            ],
            "max_output_tokens": 9,
            "store": False,
            "stream": True,
        }
    ).encode()
    parsed = parse_responses_request(body, limits=LIMITS, default_seed=5)
    turns = parsed.generate.turns
    assert [t.role for t in turns] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.USER]
    assert turns[-1].content.reveal_text() == CANARY
    assert parsed.generate.max_tokens == 9 and parsed.max_output_tokens == 9 and parsed.stream
    simple = parse_responses_request(
        b'{"model": "m", "input": "hi"}', limits=LIMITS, default_seed=5
    )
    assert [t.role for t in simple.generate.turns] == [Role.USER]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_x"}, "previous_response_id"),
        ({"conversation": "conv_x"}, "conversation"),
    ],
)
def test_conversation_state_is_refused_with_a_reason(fields: dict[str, Any], param: str) -> None:
    error = _refusal(json.dumps({"model": "m", "input": "x", **fields}).encode(), responses=True)
    assert (error.check, error.param, error.status) == (RequestCheck.CONVERSATION_STATE, param, 400)
    assert "no conversation state" in error.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"text": {"format": {"type": "json_object"}}}, "text"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].type",
        ),
        ({"max_output_tokens": MAX_TOKENS_LIMIT + 1}, "max_output_tokens"),
        ({"include": ["x"]}, "include"),
    ],
)
def test_unsupported_responses_parameters_are_named(fields: dict[str, Any], param: str) -> None:
    body = json.dumps({"model": "m", "input": "x", **fields}).encode()
    assert _refusal(body, responses=True).param == param


def test_seed_is_not_a_responses_parameter() -> None:
    body = json.dumps({"model": "m", "input": "x", "seed": 1}).encode()
    assert _refusal(body, responses=True).check is RequestCheck.UNKNOWN_PARAMETER


# --- rendering, checked by the SDK's models ---------------------------------------------------


def _sse_events(data: bytes) -> list[tuple[str | None, str]]:
    events: list[tuple[str | None, str]] = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        event = None
        payload = ""
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "event":
                event = value
            elif name == "data":
                payload = value
        events.append((event, payload))
    return events


def test_a_chat_completion_validates_as_the_sdk_model() -> None:
    body = render_chat_completion(
        completion_id="chatcmpl-1",
        created=1,
        model="m",
        pieces=[CustomerData("a"), CustomerData(" b\n\u2028")],
        finish_reason=FinishReason.LENGTH,
        usage=Usage(3, 2),
    )
    parsed = ChatCompletion.model_validate(json.loads(body))
    assert parsed.choices[0].message.content == "a b\n\u2028"
    assert parsed.choices[0].finish_reason == "length"
    assert parsed.usage is not None and parsed.usage.total_tokens == 5


def test_chat_chunks_validate_and_end_with_done() -> None:
    renderer = ChatStreamRenderer(completion_id="c", created=1, model="m", include_usage=True)
    stream = (
        renderer.start()
        + renderer.delta(CustomerData("x\ny"))
        + renderer.finish(FinishReason.STOP, Usage(1, 1))
    )
    events = _sse_events(stream)
    assert events[-1] == (None, "[DONE]")
    chunks = [ChatCompletionChunk.model_validate(json.loads(p)) for _, p in events[:-1]]
    assert chunks[1].choices[0].delta.content == "x\ny"
    assert chunks[2].choices[0].finish_reason == "stop"
    assert chunks[3].choices == [] and chunks[3].usage is not None
    failed = _sse_events(renderer.fail(OpenAIRequestError(RequestCheck.SERVER_ERROR, "boom")))
    assert json.loads(failed[0][1])["error"]["message"] == "boom"


def test_response_objects_and_events_validate_as_the_sdk_models() -> None:
    request = parse_responses_request(
        b'{"model": "m", "input": "hi", "instructions": "be kind"}', limits=LIMITS, default_seed=1
    )
    renderer = ResponseRenderer(
        response_id="resp_1", message_id="msg_1", created_at=1, request=request
    )
    stream = (
        renderer.start()
        + renderer.delta(CustomerData("one"))
        + renderer.delta(CustomerData(" two"))
        + renderer.finish(FinishReason.STOP, Usage(4, 2))
    )
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    events = [(name, adapter.validate_python(json.loads(p))) for name, p in _sse_events(stream)]
    assert all(name == event.type for name, event in events)
    final = events[-1][1]
    assert final.type == "response.completed"
    assert final.response.output_text == "one two"
    assert final.response.instructions == "be kind"
    assert final.response.usage.total_tokens == 6
    whole = ResponseRenderer(response_id="r", message_id="m", created_at=1, request=request)
    whole.add(CustomerData("z"))
    response = Response.model_validate(
        json.loads(whole.render_response(FinishReason.LENGTH, Usage(1, 1)))
    )
    assert response.status == "incomplete" and response.output_text == "z"
    failed = _sse_events(renderer.fail(OpenAIRequestError(RequestCheck.SERVER_ERROR, "boom")))
    kinds = [adapter.validate_python(json.loads(p)).type for _, p in failed]
    assert kinds == ["error", "response.failed"]


def test_error_bodies_have_the_openai_shape() -> None:
    error = OpenAIRequestError(RequestCheck.UNSUPPORTED_PARAMETER, "no", param="tools")
    assert json.loads(render_error(error)) == {
        "error": {
            "message": "no",
            "type": "invalid_request_error",
            "param": "tools",
            "code": "unsupported_parameter",
        }
    }
    for check in RequestCheck:
        assert 400 <= OpenAIRequestError(check, "m").status <= 505


# --- the TLS key binding -------------------------------------------------------------------


def test_tls_key_binding_is_domain_separated() -> None:
    spki = b"\x30" + bytes(31)
    assert tls_key_binding(spki) == hashlib.sha256(b"mantle/tls-spki/v1\x00" + spki).digest()
    assert tls_key_binding(spki) != noise_key_binding(spki)
    for bad in (b"", b"\x04" + bytes(64), b"\x30" * 2000):
        with pytest.raises(ValueError):
            tls_key_binding(bad)
