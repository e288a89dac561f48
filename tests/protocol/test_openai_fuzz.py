"""Property tests of the OpenAI-compatible layer against hostile input: any
body is parsed or refused with a typed error that quotes none of it, and any
completion text renders as server-sent events the SDK reads back whole.

A canary rides in keys, values, model names and nested parts; no refusal's
message or parameter may contain it, and no exception chain may keep it.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, FinishReason, GenerateRequest, Role
from protocol.openai import (
    ApiLimits,
    ChatStreamRenderer,
    OpenAIRequestError,
    RequestCheck,
    ResponseRenderer,
    ResponsesRequest,
    Usage,
    parse_chat_request,
    parse_responses_request,
)

CANARY = "CANARY-fuzz-5e07"
LIMITS = ApiLimits(max_body_bytes=64 * 1024)

_canary_text = st.builds(
    lambda before, after: before + CANARY + after, st.text(max_size=8), st.text(max_size=8)
)
_text = st.text(max_size=16) | _canary_text
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_names = st.sampled_from(
    [
        "model",
        "messages",
        "input",
        "instructions",
        "role",
        "content",
        "type",
        "text",
        "max_tokens",
        "max_output_tokens",
        "max_completion_tokens",
        "stop",
        "stream",
        "stream_options",
        "include_usage",
        "seed",
        "n",
        "logprobs",
        "tools",
        "store",
        "user",
        "temperature",
        "top_p",
        "previous_response_id",
        "response_format",
    ]
)
_keys = _names | _canary_text
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=24,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", CANARY]), "content": _json}
)
_bodies = st.one_of(
    st.dictionaries(_keys, _json, max_size=8),
    st.fixed_dictionaries(
        {"model": _text, "messages": st.lists(_message, max_size=4)},
        optional={"stop": _json, "stream": _json, "stream_options": _json, "n": _json},
    ),
    st.fixed_dictionaries(
        {"model": _text, "input": _json | st.lists(_message, max_size=4)},
        optional={"instructions": _json, "store": _json, "max_output_tokens": _json},
    ),
)


def _check_refusal(error: OpenAIRequestError) -> None:
    assert isinstance(error.check, RequestCheck)
    assert error.__context__ is None and error.__cause__ is None
    assert CANARY not in error.message
    assert error.param is None or CANARY not in error.param
    assert 400 <= error.status < 500


def _parse_both(body: bytes) -> None:
    for parse in (parse_chat_request, parse_responses_request):
        refusal: OpenAIRequestError | None = None
        try:
            parse(body, limits=LIMITS, default_seed=7)
        except OpenAIRequestError as exc:
            refusal = exc
        if refusal is not None:
            _check_refusal(refusal)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies)
def test_any_json_body_is_parsed_or_refused_without_quoting_it(body: dict[str, object]) -> None:
    _parse_both(json.dumps(body).encode())
    _parse_both(json.dumps(body, ensure_ascii=False).encode())


@settings(max_examples=300)
@given(st.binary(max_size=256), st.binary(max_size=64))
def test_any_bytes_are_parsed_or_refused_without_quoting_them(head: bytes, tail: bytes) -> None:
    _parse_both(head + CANARY.encode() + tail)
    _parse_both(b'{"model": "' + head + CANARY.encode() + b'"' + tail)


@settings(max_examples=200)
@given(st.sampled_from(["model", CANARY, "messages"]), st.integers(min_value=2, max_value=4))
def test_a_repeated_key_however_spelled_is_refused(key: str, copies: int) -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in key)
    pairs = [f'"{key}": 1'] + [f'"{escaped}": 2'] * (copies - 1)
    body = ("{" + ", ".join(pairs) + "}").encode()
    for parse in (parse_chat_request, parse_responses_request):
        try:
            parse(body, limits=LIMITS, default_seed=7)
        except OpenAIRequestError as exc:
            _check_refusal(exc)
            assert exc.check is RequestCheck.JSON
        else:
            raise AssertionError("a repeated key was accepted")


# --- rendering ------------------------------------------------------------------------------

# Any text an engine may emit, line and paragraph separators and lone
# surrogates included (a byte-level tokenizer can split a character).
_completion = st.lists(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=12), max_size=6
)
_chunk_adapter: TypeAdapter[ChatCompletionChunk] = TypeAdapter(ChatCompletionChunk)
_event_adapter: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def _events(stream: bytes) -> list[tuple[str | None, str]]:
    """Parse server-sent events as the SSE specification does (any of CR,
    LF, CRLF ends a line); each event has exactly one data line."""
    text = stream.decode("utf-8")
    assert "\r" not in text
    events: list[tuple[str | None, str]] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        name = None
        if lines[0].startswith("event: "):
            name = lines.pop(0)[len("event: ") :]
        assert len(lines) == 1 and lines[0].startswith("data: "), block[:80]
        events.append((name, lines[0][len("data: ") :]))
    assert text.endswith("\n\n")
    return events


@settings(max_examples=200)
@given(_completion, st.booleans(), st.sampled_from([FinishReason.STOP, FinishReason.LENGTH]))
def test_chat_stream_events_carry_the_text_whole(
    pieces: list[str], include_usage: bool, reason: FinishReason
) -> None:
    renderer = ChatStreamRenderer(
        completion_id="chatcmpl-x", created=1, model="m", include_usage=include_usage
    )
    stream = renderer.start()
    for piece in pieces:
        stream += renderer.delta(CustomerData(piece))
    stream += renderer.finish(reason, Usage(3, len(pieces)))
    events = _events(stream)
    assert events[-1] == (None, "[DONE]")
    text = ""
    for _, data in events[:-1]:
        chunk = _chunk_adapter.validate_python(json.loads(data))
        text += "".join(choice.delta.content or "" for choice in chunk.choices)
    assert text == "".join(pieces)


@settings(max_examples=200)
@given(_completion, st.sampled_from([FinishReason.STOP, FinishReason.LENGTH]))
def test_responses_stream_events_carry_the_text_whole(
    pieces: list[str], reason: FinishReason
) -> None:
    request = ResponsesRequest(
        generate=GenerateRequest("m", (ChatTurn(Role.USER, CustomerData("q")),), 16, 1.0, 1.0, 1),
        stream=True,
        instructions=None,
        max_output_tokens=None,
    )
    renderer = ResponseRenderer(
        response_id="resp_x", message_id="msg_x", created_at=1, request=request
    )
    stream = renderer.start()
    for piece in pieces:
        stream += renderer.delta(CustomerData(piece))
    stream += renderer.finish(reason, Usage(3, len(pieces)))
    deltas, done = "", None
    for index, (name, data) in enumerate(_events(stream)):
        event = _event_adapter.validate_python(json.loads(data))
        assert event.type == name and event.sequence_number == index
        if event.type == "response.output_text.delta":
            deltas += event.delta
        elif event.type == "response.output_text.done":
            done = event.text
    assert deltas == done == "".join(pieces)
