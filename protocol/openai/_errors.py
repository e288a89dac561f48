"""OpenAI-shaped request errors: a status, a check naming what failed, a parameter.

Every refusal of this layer is an :class:`OpenAIRequestError`; its
:attr:`~OpenAIRequestError.check` is a :class:`RequestCheck`, and its message
is a fixed sentence that names parameters and limits, never a value the
request carried (a request body is customer data). :func:`render_error`
turns one into the body the official ``openai`` SDK reads
(``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import enum
import json


class RequestCheck(enum.StrEnum):
    """The checks an API request passes through; each names its HTTP status."""

    #: The body is larger than the limit (413).
    BODY_SIZE = "body_size"
    #: The body did not arrive within the read deadline (408).
    BODY_DEADLINE = "body_deadline"
    #: The content type is not ``application/json`` (415).
    CONTENT_TYPE = "content_type"
    #: The body is not UTF-8 (400).
    ENCODING = "encoding"
    #: The body is not JSON, or JSON Mantle refuses (NaN, huge numbers, duplicates) (400).
    JSON = "json"
    #: The JSON nests deeper than the limit (400).
    NESTING = "nesting"
    #: The top level is not an object (400).
    NOT_AN_OBJECT = "not_an_object"
    #: A required parameter is missing (400).
    MISSING_PARAMETER = "missing_parameter"
    #: A parameter has the wrong type or is out of range (400).
    INVALID_PARAMETER = "invalid_parameter"
    #: A parameter OpenAI defines but Mantle does not support (400).
    UNSUPPORTED_PARAMETER = "unsupported_parameter"
    #: A parameter that neither OpenAI nor Mantle defines (400).
    UNKNOWN_PARAMETER = "unknown_parameter"
    #: Too many messages, or a text longer than the limit (400).
    TOO_LARGE = "too_large"
    #: ``store: true`` or ``previous_response_id``: Mantle keeps no state (400).
    CONVERSATION_STATE = "conversation_state"
    #: Too many request headers, or too large (431).
    HEADERS = "headers"
    #: Not HTTP/1.x: the API is served over HTTP/1.1 only (505).
    HTTP_VERSION = "http_version"
    #: The API key is missing or unknown (401).
    AUTHENTICATION = "authentication"
    #: No such model (404).
    MODEL_NOT_FOUND = "model_not_found"
    #: No such route (404).
    ROUTE_NOT_FOUND = "route_not_found"
    #: The route does not serve this method (405).
    METHOD = "method"
    #: The queue is full (429).
    RATE_LIMITED = "rate_limited"
    #: No node serves the model now (503).
    NO_CAPACITY = "no_capacity"
    #: The request did not finish before its deadline (504).
    DEADLINE = "deadline"
    #: A sealed request whose id was submitted before (409).
    REPLAYED = "replayed"
    #: The cluster failed the request (500 or 503).
    SERVER_ERROR = "server_error"


#: ``check -> (HTTP status, OpenAI error type, OpenAI error code)``.
_SHAPES: dict[RequestCheck, tuple[int, str, str | None]] = {
    RequestCheck.BODY_SIZE: (413, "invalid_request_error", "request_too_large"),
    RequestCheck.BODY_DEADLINE: (408, "invalid_request_error", "request_timeout"),
    RequestCheck.CONTENT_TYPE: (415, "invalid_request_error", "unsupported_media_type"),
    RequestCheck.ENCODING: (400, "invalid_request_error", "invalid_encoding"),
    RequestCheck.JSON: (400, "invalid_request_error", "invalid_json"),
    RequestCheck.NESTING: (400, "invalid_request_error", "invalid_json"),
    RequestCheck.NOT_AN_OBJECT: (400, "invalid_request_error", "invalid_json"),
    RequestCheck.MISSING_PARAMETER: (400, "invalid_request_error", "missing_required_parameter"),
    RequestCheck.INVALID_PARAMETER: (400, "invalid_request_error", "invalid_value"),
    RequestCheck.UNSUPPORTED_PARAMETER: (400, "invalid_request_error", "unsupported_parameter"),
    RequestCheck.UNKNOWN_PARAMETER: (400, "invalid_request_error", "unknown_parameter"),
    RequestCheck.TOO_LARGE: (400, "invalid_request_error", "too_large"),
    RequestCheck.CONVERSATION_STATE: (400, "invalid_request_error", "unsupported_parameter"),
    RequestCheck.HEADERS: (431, "invalid_request_error", "request_header_fields_too_large"),
    RequestCheck.HTTP_VERSION: (505, "invalid_request_error", "http_version_not_supported"),
    RequestCheck.AUTHENTICATION: (401, "invalid_request_error", "invalid_api_key"),
    RequestCheck.MODEL_NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    RequestCheck.ROUTE_NOT_FOUND: (404, "invalid_request_error", "not_found"),
    RequestCheck.METHOD: (405, "invalid_request_error", "method_not_allowed"),
    RequestCheck.RATE_LIMITED: (429, "rate_limit_error", "rate_limit_exceeded"),
    RequestCheck.NO_CAPACITY: (503, "server_error", "no_capacity"),
    RequestCheck.DEADLINE: (504, "server_error", "timeout"),
    RequestCheck.REPLAYED: (409, "invalid_request_error", "request_replayed"),
    RequestCheck.SERVER_ERROR: (500, "server_error", "server_error"),
}


class OpenAIRequestError(Exception):
    """A request refused; :attr:`check` names why, :attr:`param` which parameter.

    ``message`` is code-chosen text (parameter names, limits), never request
    content. ``status`` overrides the check's usual status where one check
    maps to several (a retryable server error is 503, not 500).
    """

    def __init__(
        self,
        check: RequestCheck,
        message: str,
        *,
        param: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.check = check
        self.message = message
        self.param = param
        default_status, self.error_type, self.code = _SHAPES[check]
        self.status = default_status if status is None else status


def error_body(error: OpenAIRequestError) -> dict[str, object]:
    """The ``{"error": {...}}`` object OpenAI answers with."""
    return {
        "error": {
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        }
    }


def render_error(error: OpenAIRequestError) -> bytes:
    """:func:`error_body` as JSON bytes."""
    return json.dumps(error_body(error), separators=(",", ":")).encode("utf-8")
