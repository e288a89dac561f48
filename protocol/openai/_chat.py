"""``POST /v1/chat/completions``: the request in, ``chat.completion`` and its chunks out."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Final

from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, FinishReason, GenerateRequest, Role
from protocol.openai._errors import OpenAIRequestError, RequestCheck, error_body
from protocol.openai._json import decode_json_object
from protocol.openai._params import (
    ApiLimits,
    TurnBudget,
    check_keys,
    invalid,
    read_bool,
    read_max_tokens,
    read_model,
    read_seed,
    read_stop,
    read_temperature,
    read_top_p,
    read_user,
    require,
    text_parts,
    unsupported,
)
from protocol.openai._sse import sse_data, sse_done

_SUPPORTED: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "user",
    }
)
#: OpenAI parameters Mantle accepts only at the value that changes nothing.
_DEFAULT_ONLY: Final[dict[str, object]] = {
    "n": 1,
    "logprobs": False,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "response_format": {"type": "text"},
    "parallel_tool_calls": False,
    "store": False,
}
_UNSUPPORTED: Final = frozenset(
    {
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
        "verbosity",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
    }
)
_ROLES: Final = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
}
_MESSAGE_UNSUPPORTED: Final = frozenset(
    {"name", "tool_calls", "tool_call_id", "function_call", "refusal", "audio"}
)
_TEXT_PARTS: Final = frozenset({"text"})


@dataclasses.dataclass(frozen=True, slots=True)
class ChatCompletionRequest:
    """A validated chat completion request: what to generate, and how to answer."""

    generate: GenerateRequest
    stream: bool
    #: Streaming only: end with a chunk carrying the usage.
    include_usage: bool


def parse_chat_request(
    body: bytes, *, limits: ApiLimits, default_seed: int
) -> ChatCompletionRequest:
    """Validate a request body; raise :class:`OpenAIRequestError` naming what failed.

    ``default_seed`` is the seed when the request names none (the caller
    draws it, so unseeded requests differ as they do at OpenAI).
    """
    if len(body) > limits.max_body_bytes:
        raise OpenAIRequestError(
            RequestCheck.BODY_SIZE, f"the request body is larger than {limits.max_body_bytes} bytes"
        )
    data = decode_json_object(body, max_depth=limits.max_json_depth)
    check_keys(
        data,
        where="",
        supported=_SUPPORTED,
        unsupported_names=_UNSUPPORTED,
        default_accepted=_DEFAULT_ONLY,
    )
    model = read_model(data)
    turns = _read_messages(require(data, "messages"), limits)
    stream = read_bool(data, "stream", False)
    include_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not stream:
            raise invalid("stream_options", "stream_options is only allowed with stream: true")
        if not isinstance(options, dict):
            raise invalid("stream_options", "stream_options must be an object")
        check_keys(
            options,
            where="stream_options.",
            supported=frozenset({"include_usage"}),
            unsupported_names=frozenset(),
            default_accepted={"include_obfuscation": False},
        )
        include_usage = read_bool(options, "include_usage", False)
    read_user(data)
    generate = GenerateRequest(
        model=model,
        turns=tuple(turns),
        max_tokens=read_max_tokens(
            data, ("max_completion_tokens", "max_tokens"), limits.default_max_tokens
        ),
        temperature=read_temperature(data),
        top_p=read_top_p(data),
        seed=read_seed(data, default_seed),
        stop=read_stop(data),
    )
    return ChatCompletionRequest(generate, stream, include_usage)


def _read_messages(value: object, limits: ApiLimits) -> list[ChatTurn]:
    if not isinstance(value, list) or not value:
        raise invalid("messages", "messages must be a non-empty list")
    if len(value) > limits.max_messages:
        raise OpenAIRequestError(
            RequestCheck.TOO_LARGE,
            f"a request has at most {limits.max_messages} messages",
            param="messages",
        )
    budget = TurnBudget(limits, "messages")
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(where, f"{where} must be an object")
        role_name = message.get("role")
        role = _ROLES.get(role_name) if isinstance(role_name, str) else None
        if role is None:
            if role_name in ("tool", "function"):
                raise unsupported(where + ".role", "Mantle has no tools")
            raise invalid(where + ".role", f"{where}.role must be one of {sorted(_ROLES)}")
        check_keys(
            message,
            where=where + ".",
            supported=frozenset({"role", "content"}),
            unsupported_names=_MESSAGE_UNSUPPORTED,
            default_accepted={},
        )
        content = text_parts(
            require(message, "content", where + "."), where + ".content", _TEXT_PARTS
        )
        budget.add(ChatTurn(role, CustomerData(content)), where + ".content")
    return budget.turns


# --- rendering -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def to_chat(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def chat_finish_reason(reason: FinishReason) -> str:
    """OpenAI's name for a finish reason (a cancelled answer has no reader left;
    it is named ``stop`` should it ever be rendered)."""
    return "length" if reason is FinishReason.LENGTH else "stop"


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def render_chat_completion(
    *,
    completion_id: str,
    created: int,
    model: str,
    pieces: Sequence[CustomerData],
    finish_reason: FinishReason,
    usage: Usage,
) -> bytes:
    """A ``chat.completion`` object whose message is ``pieces`` joined (the only
    place its text is unwrapped)."""
    return _dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(piece.reveal_text() for piece in pieces),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": chat_finish_reason(finish_reason),
                }
            ],
            "usage": usage.to_chat(),
            "system_fingerprint": None,
        }
    )


class ChatStreamRenderer:
    """The server-sent events of one streamed chat completion, in order:
    :meth:`start`, :meth:`delta` for each chunk, then :meth:`finish` or :meth:`fail`."""

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool):
        self._id = completion_id
        self._created = created
        self._model = model
        self._include_usage = include_usage

    def _chunk(self, choices: list[object], usage: dict[str, int] | None = None) -> bytes:
        chunk: dict[str, object] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self._include_usage:
            chunk["usage"] = usage
        return sse_data(_dumps(chunk))

    @staticmethod
    def _choice(delta: dict[str, object], finish_reason: str | None) -> dict[str, object]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def start(self) -> bytes:
        return self._chunk([self._choice({"role": "assistant", "content": ""}, None)])

    def delta(self, text: CustomerData) -> bytes:
        return self._chunk([self._choice({"content": text.reveal_text()}, None)])

    def finish(self, finish_reason: FinishReason, usage: Usage) -> bytes:
        out = self._chunk([self._choice({}, chat_finish_reason(finish_reason))])
        if self._include_usage:
            out += self._chunk([], usage.to_chat())
        return out + sse_done()

    @staticmethod
    def fail(error: OpenAIRequestError) -> bytes:
        """The event that ends a stream which failed after it started: the SDK
        raises it as ``openai.APIError``."""
        return sse_data(_dumps(error_body(error)))


def render_model_list(models: Sequence[tuple[str, int]]) -> bytes:
    """``GET /v1/models``: each ``(model id, inference nodes serving it now)``.
    The count is an extra field (``nodes``) the SDK keeps as it is; a model
    the release lists that no node serves yet shows 0 (requests get 503)."""
    return _dumps(
        {
            "object": "list",
            "data": [
                {
                    "id": model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "mantle",
                    "nodes": nodes,
                }
                for model, nodes in models
            ],
        }
    )
