"""``POST /v1/responses``: the request in, the ``response`` object and its events out.

Mantle keeps no conversation state: ``store`` is accepted only as ``false``
(and every response reports ``store: false``), ``previous_response_id`` and
``conversation`` are refused with a 400 that says so.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Final

from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, FinishReason, GenerateRequest, Role
from protocol.openai._chat import Usage
from protocol.openai._errors import OpenAIRequestError, RequestCheck
from protocol.openai._json import decode_json_object
from protocol.openai._params import (
    ApiLimits,
    TurnBudget,
    check_keys,
    invalid,
    read_bool,
    read_max_tokens,
    read_model,
    read_temperature,
    read_top_p,
    read_user,
    require,
    text_parts,
    unsupported,
)
from protocol.openai._sse import sse_data

_SUPPORTED: Final = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stream",
        "store",
        "user",
    }
)
_DEFAULT_ONLY: Final[dict[str, object]] = {
    "parallel_tool_calls": False,
    "truncation": "disabled",
    "text": {"format": {"type": "text"}},
    "background": False,
    "tools": [],
}
_UNSUPPORTED: Final = frozenset(
    {
        "tool_choice",
        "reasoning",
        "include",
        "metadata",
        "prompt",
        "service_tier",
        "top_logprobs",
        "max_tool_calls",
        "stream_options",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)
_NO_STATE: Final = "Mantle keeps no conversation state"
_ROLES: Final = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
}
_INPUT_PARTS: Final = frozenset({"input_text"})
_ASSISTANT_PARTS: Final = frozenset({"input_text", "output_text"})


@dataclasses.dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated Responses API request."""

    generate: GenerateRequest
    stream: bool
    #: Echoed in the response object, as OpenAI does.
    instructions: CustomerData | None
    #: As given (``None`` when the request named none).
    max_output_tokens: int | None


def parse_responses_request(
    body: bytes, *, limits: ApiLimits, default_seed: int
) -> ResponsesRequest:
    """Validate a request body; raise :class:`OpenAIRequestError` naming what failed."""
    if len(body) > limits.max_body_bytes:
        raise OpenAIRequestError(
            RequestCheck.BODY_SIZE, f"the request body is larger than {limits.max_body_bytes} bytes"
        )
    data = decode_json_object(body, max_depth=limits.max_json_depth)
    if data.get("store") is True:
        raise OpenAIRequestError(
            RequestCheck.CONVERSATION_STATE,
            f"store: true is not supported: {_NO_STATE}; send store: false or omit it",
            param="store",
        )
    for name in ("previous_response_id", "conversation"):
        if data.get(name) is not None:
            raise OpenAIRequestError(
                RequestCheck.CONVERSATION_STATE,
                f"{name} is not supported: {_NO_STATE}; send the whole conversation as input",
                param=name,
            )
    data.pop("previous_response_id", None)
    data.pop("conversation", None)
    check_keys(
        data,
        where="",
        supported=_SUPPORTED,
        unsupported_names=_UNSUPPORTED,
        default_accepted=_DEFAULT_ONLY,
    )
    model = read_model(data)
    read_bool(data, "store", False)
    read_user(data)
    budget = TurnBudget(limits, "input")
    instructions: CustomerData | None = None
    raw_instructions = data.get("instructions")
    if raw_instructions is not None:
        if not isinstance(raw_instructions, str):
            raise invalid("instructions", "instructions must be a string")
        instructions = CustomerData(raw_instructions)
        budget.add(ChatTurn(Role.SYSTEM, instructions), "instructions")
    _read_input(require(data, "input"), budget, limits)
    max_output_tokens = data.get("max_output_tokens")
    generate = GenerateRequest(
        model=model,
        turns=tuple(budget.turns),
        max_tokens=read_max_tokens(data, ("max_output_tokens",), limits.default_max_tokens),
        temperature=read_temperature(data),
        top_p=read_top_p(data),
        seed=default_seed,
    )
    return ResponsesRequest(
        generate=generate,
        stream=read_bool(data, "stream", False),
        instructions=instructions,
        max_output_tokens=max_output_tokens if isinstance(max_output_tokens, int) else None,
    )


def _read_input(value: object, budget: TurnBudget, limits: ApiLimits) -> None:
    if isinstance(value, str):
        budget.add(ChatTurn(Role.USER, CustomerData(value)), "input")
        return
    if not isinstance(value, list) or not value:
        raise invalid("input", "input must be a string or a non-empty list of messages")
    if len(value) > limits.max_messages:
        raise OpenAIRequestError(
            RequestCheck.TOO_LARGE,
            f"a request has at most {limits.max_messages} messages",
            param="input",
        )
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise invalid(where, f"{where} must be an object")
        kind = item.get("type", "message")
        if kind != "message":
            if isinstance(kind, str):
                raise unsupported(where + ".type", "Mantle accepts message items only")
            raise invalid(where + ".type", f"{where}.type must be a string")
        role_name = item.get("role")
        role = _ROLES.get(role_name) if isinstance(role_name, str) else None
        if role is None:
            raise invalid(where + ".role", f"{where}.role must be one of {sorted(_ROLES)}")
        check_keys(
            item,
            where=where + ".",
            supported=frozenset({"type", "role", "content"}),
            unsupported_names=frozenset({"id", "status"}),
            default_accepted={},
        )
        parts = _ASSISTANT_PARTS if role is Role.ASSISTANT else _INPUT_PARTS
        content = text_parts(require(item, "content", where + "."), where + ".content", parts)
        budget.add(ChatTurn(role, CustomerData(content)), where + ".content")


# --- rendering -----------------------------------------------------------------------


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _usage(usage: Usage) -> dict[str, object]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


class ResponseRenderer:
    """The ``response`` object of one request, and (streaming) its events.

    Non-streaming: :meth:`render_response`. Streaming, in order:
    :meth:`start`, :meth:`delta` per chunk, then :meth:`finish` or
    :meth:`fail`. The text is held as :class:`CustomerData` pieces and
    unwrapped only while bytes are rendered.
    """

    def __init__(
        self,
        *,
        response_id: str,
        message_id: str,
        created_at: int,
        request: ResponsesRequest,
    ) -> None:
        self._id = response_id
        self._message_id = message_id
        self._created_at = created_at
        self._request = request
        self._pieces: list[CustomerData] = []
        self._sequence = 0

    # -- objects ---------------------------------------------------------------

    def _text(self) -> str:
        return "".join(piece.reveal_text() for piece in self._pieces)

    def _part(self, text: str) -> dict[str, object]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _message(self, status: str, content: list[object]) -> dict[str, object]:
        return {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def _response(
        self,
        status: str,
        output: list[object],
        *,
        usage: Usage | None = None,
        incomplete: bool = False,
        error: dict[str, str] | None = None,
    ) -> dict[str, object]:
        request = self._request
        instructions = request.instructions
        return {
            "id": self._id,
            "object": "response",
            "created_at": self._created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": None if instructions is None else instructions.reveal_text(),
            "max_output_tokens": request.max_output_tokens,
            "max_tool_calls": None,
            "model": request.generate.model,
            "output": output,
            "parallel_tool_calls": False,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": False,
            "temperature": request.generate.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": "none",
            "tools": [],
            "top_logprobs": 0,
            "top_p": request.generate.top_p,
            "truncation": "disabled",
            "usage": None if usage is None else _usage(usage),
            "user": None,
            "metadata": {},
        }

    def _finished(self, reason: FinishReason, usage: Usage) -> dict[str, object]:
        incomplete = reason is FinishReason.LENGTH
        status = "incomplete" if incomplete else "completed"
        message = self._message(status, [self._part(self._text())])
        return self._response(status, [message], usage=usage, incomplete=incomplete)

    def add(self, text: CustomerData) -> None:
        """Non-streaming: collect one chunk's text."""
        self._pieces.append(text)

    def render_response(self, reason: FinishReason, usage: Usage) -> bytes:
        """The whole ``response`` object (non-streaming)."""
        return _dumps(self._finished(reason, usage))

    # -- events ----------------------------------------------------------------

    def _event(self, kind: str, fields: dict[str, object]) -> bytes:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse_data(_dumps(event), event=kind)

    def _item_fields(self) -> dict[str, object]:
        return {"item_id": self._message_id, "output_index": 0, "content_index": 0}

    def start(self) -> bytes:
        created = self._response("in_progress", [])
        return (
            self._event("response.created", {"response": created})
            + self._event("response.in_progress", {"response": created})
            + self._event(
                "response.output_item.added",
                {"output_index": 0, "item": self._message("in_progress", [])},
            )
            + self._event(
                "response.content_part.added", {**self._item_fields(), "part": self._part("")}
            )
        )

    def delta(self, text: CustomerData) -> bytes:
        self._pieces.append(text)
        return self._event(
            "response.output_text.delta",
            {**self._item_fields(), "delta": text.reveal_text(), "logprobs": []},
        )

    def finish(self, reason: FinishReason, usage: Usage) -> bytes:
        text = self._text()
        final = self._finished(reason, usage)
        message = final["output"]
        assert isinstance(message, list)
        kind = "response.incomplete" if reason is FinishReason.LENGTH else "response.completed"
        return (
            self._event(
                "response.output_text.done", {**self._item_fields(), "text": text, "logprobs": []}
            )
            + self._event(
                "response.content_part.done", {**self._item_fields(), "part": self._part(text)}
            )
            + self._event("response.output_item.done", {"output_index": 0, "item": message[0]})
            + self._event(kind, {"response": final})
        )

    def fail(self, error: OpenAIRequestError) -> bytes:
        """The events that end a stream which failed after it started: an
        ``error`` event, then ``response.failed`` carrying the error."""
        code = error.code or "server_error"
        failed = self._response(
            "failed", [], error={"code": "server_error", "message": error.message}
        )
        return self._event(
            "error", {"code": code, "message": error.message, "param": error.param}
        ) + self._event("response.failed", {"response": failed})
