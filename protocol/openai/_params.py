"""Checks shared by both APIs: limits, typed parameter readers, turns.

Each reader takes the parsed body and a parameter name and returns a typed
value or raises :class:`OpenAIRequestError` naming the parameter (the name is
ours, from the API's definition, never a key the request chose).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from protocol.customer_data import CustomerData
from protocol.inference import (
    MAX_STOP_LEN,
    MAX_STOP_SEQUENCES,
    MAX_TEMPERATURE,
    MAX_TOKENS_LIMIT,
    MAX_TURN_LEN,
    ChatTurn,
)
from protocol.openai._errors import OpenAIRequestError, RequestCheck

#: The longest model name (the wire format's bound).
MAX_MODEL_CHARS: Final = 128
#: The most turns one request carries (the wire format's bound).
MAX_TURNS: Final = 256
#: The longest ``user`` identifier accepted (and dropped).
MAX_USER_CHARS: Final = 256
_U32_MAX: Final = 0xFFFF_FFFF


@dataclasses.dataclass(frozen=True, slots=True)
class ApiLimits:
    """What one API request may carry. Defaults are the wire format's bounds
    where it has one; a node may only tighten them."""

    #: Bytes of request body.
    max_body_bytes: int = 1024 * 1024
    #: Messages (chat) or input items plus instructions (responses).
    max_messages: int = 64
    #: Characters of one message's text.
    max_text_chars: int = 64 * 1024
    #: Characters of all messages' text together.
    max_total_text_chars: int = 256 * 1024
    #: Nesting depth of the JSON body.
    max_json_depth: int = 16
    #: ``max_tokens`` when the request names none.
    default_max_tokens: int = 512

    def __post_init__(self) -> None:
        if not 1 <= self.max_messages <= MAX_TURNS:
            raise ValueError(f"max_messages must be in [1, {MAX_TURNS}]")
        if not 1 <= self.max_text_chars <= MAX_TURN_LEN:
            raise ValueError(f"max_text_chars must be in [1, {MAX_TURN_LEN}]")
        if self.max_total_text_chars < self.max_text_chars:
            raise ValueError("max_total_text_chars must be at least max_text_chars")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if not 4 <= self.max_json_depth <= 64:
            raise ValueError("max_json_depth must be in [4, 64]")
        if not 1 <= self.default_max_tokens <= MAX_TOKENS_LIMIT:
            raise ValueError(f"default_max_tokens must be in [1, {MAX_TOKENS_LIMIT}]")


def invalid(param: str, message: str) -> OpenAIRequestError:
    return OpenAIRequestError(RequestCheck.INVALID_PARAMETER, message, param=param)


def unsupported(param: str, why: str = "Mantle does not support it") -> OpenAIRequestError:
    return OpenAIRequestError(
        RequestCheck.UNSUPPORTED_PARAMETER,
        f"parameter {param} is not supported: {why}",
        param=param,
    )


def check_keys(
    body: Mapping[str, object],
    *,
    where: str,
    supported: frozenset[str],
    unsupported_names: frozenset[str],
    default_accepted: Mapping[str, object],
) -> None:
    """Every key of ``body`` is supported, or an OpenAI parameter at its default
    value (``n: 1``, ``logprobs: false``...), or the request is refused.

    ``where`` prefixes parameter names (``messages[0].``). A key neither API
    defines is refused without being named: it is the request's text.
    """
    for key, value in body.items():
        if key in supported:
            continue
        if key in default_accepted:
            if _same_json(value, default_accepted[key]):
                continue
            raise unsupported(where + key, "only its default value is accepted")
        if key in unsupported_names:
            raise unsupported(where + key)
        raise OpenAIRequestError(
            RequestCheck.UNKNOWN_PARAMETER,
            f"the request has a parameter{' in ' + where.rstrip('.') if where else ''} "
            "that the API does not define",
        )


def _same_json(a: object, b: object) -> bool:
    # bool is an int in Python; JSON keeps them apart.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def require(body: Mapping[str, object], name: str, where: str = "") -> object:
    if name not in body:
        raise OpenAIRequestError(
            RequestCheck.MISSING_PARAMETER,
            f"missing required parameter {where + name}",
            param=where + name,
        )
    return body[name]


def read_model(body: Mapping[str, object]) -> str:
    value = require(body, "model")
    if not isinstance(value, str) or not value:
        raise invalid("model", "model must be a non-empty string")
    if len(value) > MAX_MODEL_CHARS or not value.isprintable():
        raise invalid("model", f"model must be at most {MAX_MODEL_CHARS} printable characters")
    return value


def read_bool(body: Mapping[str, object], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, f"{name} must be a boolean")
    return value


def _number(body: Mapping[str, object], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(name, f"{name} must be a number")
    return float(value)


def read_temperature(body: Mapping[str, object]) -> float:
    value = _number(body, "temperature")
    if value is None:
        return 1.0
    if not 0.0 <= value <= MAX_TEMPERATURE:
        raise invalid("temperature", f"temperature must be in [0, {MAX_TEMPERATURE:g}]")
    return value


def read_top_p(body: Mapping[str, object]) -> float:
    value = _number(body, "top_p")
    if value is None:
        return 1.0
    if not 0.0 < value <= 1.0:
        raise invalid("top_p", "top_p must be in (0, 1]")
    return value


def read_int(body: Mapping[str, object], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"{name} must be an integer")
    if not lo <= value <= hi:
        raise invalid(name, f"{name} must be in [{lo}, {hi}]")
    return value


def read_max_tokens(body: Mapping[str, object], names: tuple[str, ...], default: int) -> int:
    """The first of ``names`` given (at most one may be), or ``default``."""
    given = [name for name in names if body.get(name) is not None]
    if len(given) > 1:
        raise invalid(given[1], f"give only one of {', '.join(names)}")
    if not given:
        return default
    value = read_int(body, given[0], 1, MAX_TOKENS_LIMIT)
    assert value is not None
    return value


def read_seed(body: Mapping[str, object], default: int) -> int:
    value = read_int(body, "seed", 0, _U32_MAX)
    return default if value is None else value


def read_user(body: Mapping[str, object]) -> None:
    """``user`` is accepted and dropped: Mantle neither stores nor logs it."""
    value = body.get("user")
    if value is not None and (not isinstance(value, str) or len(value) > MAX_USER_CHARS):
        raise invalid("user", f"user must be a string of at most {MAX_USER_CHARS} characters")


def read_stop(body: Mapping[str, object]) -> tuple[CustomerData, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise invalid("stop", "stop must be a string or a list of strings")
    if len(items) > MAX_STOP_SEQUENCES:
        raise invalid("stop", f"stop takes at most {MAX_STOP_SEQUENCES} sequences")
    out: list[CustomerData] = []
    for item in items:
        assert isinstance(item, str)
        if not 0 < len(item) <= MAX_STOP_LEN:
            raise invalid("stop", f"each stop sequence has 1 to {MAX_STOP_LEN} characters")
        out.append(CustomerData(item))
    return tuple(out)


class TurnBudget:
    """Counts turns and characters against the limits while turns are read."""

    def __init__(self, limits: ApiLimits, param: str) -> None:
        self._limits = limits
        self._param = param
        self._total = 0
        self.turns: list[ChatTurn] = []

    def add(self, turn: ChatTurn, param: str) -> None:
        size = len(turn.content)
        if size > self._limits.max_text_chars:
            raise OpenAIRequestError(
                RequestCheck.TOO_LARGE,
                f"{param} is longer than {self._limits.max_text_chars} characters",
                param=param,
            )
        self._total += size
        if self._total > self._limits.max_total_text_chars:
            raise OpenAIRequestError(
                RequestCheck.TOO_LARGE,
                f"the messages are longer than {self._limits.max_total_text_chars} "
                "characters together",
                param=self._param,
            )
        if len(self.turns) >= self._limits.max_messages:
            raise OpenAIRequestError(
                RequestCheck.TOO_LARGE,
                f"a request has at most {self._limits.max_messages} messages",
                param=self._param,
            )
        self.turns.append(turn)


def text_parts(value: object, param: str, part_types: frozenset[str]) -> str:
    """A content field: a string, or a list of ``{"type": <text type>, "text": str}``
    parts (joined without separator, as OpenAI does)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise invalid(param, f"{param} must be a string or a non-empty list of text parts")
    texts: list[str] = []
    for index, part in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise invalid(where, f"{where} must be an object")
        kind = part.get("type")
        if kind not in part_types:
            if isinstance(kind, str) and kind in _NON_TEXT_PARTS:
                raise unsupported(where + ".type", "Mantle accepts text parts only")
            raise invalid(where + ".type", f"{where}.type must be one of {sorted(part_types)}")
        check_keys(
            part,
            where=where + ".",
            supported=frozenset({"type", "text"}),
            unsupported_names=frozenset({"cache_control", "annotations", "logprobs"}),
            default_accepted={},
        )
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid(where + ".text", f"{where}.text must be a string")
        texts.append(text)
    return "".join(texts)


#: Content part types OpenAI defines that carry something other than text.
_NON_TEXT_PARTS: Final = frozenset(
    {"image_url", "input_audio", "file", "input_image", "input_file", "refusal", "audio"}
)
