"""The OpenAI-compatible HTTP API as pure functions (sans-IO, like h11).

Bytes in, typed values out: :func:`parse_chat_request` and
:func:`parse_responses_request` turn a request body into a
:class:`~protocol.inference.GenerateRequest` (plus how to answer: streaming,
usage) or raise :class:`OpenAIRequestError`, whose ``check``
(:class:`RequestCheck`) names what failed and whose ``param`` names the
parameter. Every parameter Mantle does not support is refused by name, never
ignored; OpenAI parameters given at the value that changes nothing
(``n: 1``, ``logprobs: false``, ``response_format: {"type": "text"}``...)
are accepted; ``user`` is accepted and dropped (Mantle neither stores nor
logs it); keys the API does not define are refused without being quoted.

The renderers produce exactly the shapes the official ``openai`` SDK parses:
``chat.completion``, ``chat.completion.chunk`` server-sent events ending in
``data: [DONE]`` (with a usage chunk when ``stream_options.include_usage``),
the ``response`` object and its ``response.*`` events, and error bodies
``{"error": {"message", "type", "param", "code"}}``. A stream that fails after
it started ends with an error event (chat: ``data: {"error": ...}``, which
the SDK raises as ``openai.APIError``; responses: ``error`` then
``response.failed``). Customer text stays in
:class:`~protocol.customer_data.CustomerData` until these functions render
it, and no error message quotes a request.
"""

from protocol.openai._chat import (
    ChatCompletionRequest,
    ChatStreamRenderer,
    Usage,
    chat_finish_reason,
    parse_chat_request,
    render_chat_completion,
    render_model_list,
)
from protocol.openai._errors import OpenAIRequestError, RequestCheck, error_body, render_error
from protocol.openai._json import MAX_NUMBER_CHARS, decode_json_object
from protocol.openai._params import ApiLimits
from protocol.openai._responses import ResponseRenderer, ResponsesRequest, parse_responses_request
from protocol.openai._sse import sse_data, sse_done

__all__ = [
    "MAX_NUMBER_CHARS",
    "ApiLimits",
    "ChatCompletionRequest",
    "ChatStreamRenderer",
    "OpenAIRequestError",
    "RequestCheck",
    "ResponseRenderer",
    "ResponsesRequest",
    "Usage",
    "chat_finish_reason",
    "decode_json_object",
    "error_body",
    "parse_chat_request",
    "parse_responses_request",
    "render_chat_completion",
    "render_error",
    "render_model_list",
    "sse_data",
    "sse_done",
]
