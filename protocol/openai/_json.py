"""Strict JSON for request bodies: bounded, finite, unambiguous, never quoted.

:func:`decode_json_object` refuses what a careless decoder accepts or chokes
on: bytes that are not UTF-8, duplicate keys (two readers could see two
different requests), ``NaN``/``Infinity``, numbers longer than
:data:`MAX_NUMBER_CHARS` characters or outside a double's range, and nesting
deeper than the limit. Every refusal is an :class:`OpenAIRequestError`
raised outside any ``except`` block, so no exception chain keeps the body.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from typing import Final

from protocol.openai._errors import OpenAIRequestError, RequestCheck

#: The longest number literal accepted (an int64 has 19 digits and a sign).
MAX_NUMBER_CHARS: Final = 32


class _Refused(Exception):
    """Raised inside the decoder's hooks; carries only the check."""

    def __init__(self, check: RequestCheck, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(RequestCheck.JSON, "a number in the body is too long")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(RequestCheck.JSON, "a number in the body is too long")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(RequestCheck.JSON, "a number in the body is out of range")
    return value


def _parse_constant(text: str) -> object:
    raise _Refused(RequestCheck.JSON, "NaN and Infinity are not JSON")


def _object_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(RequestCheck.JSON, "the body repeats a key")
        out[key] = value
    return out


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_object_pairs,
    parse_int=_parse_int,
    parse_float=_parse_float,
    parse_constant=_parse_constant,
    strict=True,
)


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _structure(value: object, limit: int) -> RequestCheck | None:
    """What is wrong with a decoded body's shape, walked iteratively: nesting
    deeper than ``limit``, or a string holding a lone surrogate (``"\\ud800"``
    decodes to one, and it has no UTF-8 form to hand an engine)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return RequestCheck.ENCODING
            continue
        if isinstance(item, dict):
            children: list[object] = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return RequestCheck.NESTING
        stack.extend((child, depth + 1) for child in children)
    return None


def decode_json_object(body: bytes, *, max_depth: int) -> dict[str, object]:
    """``body`` as a JSON object, or :class:`OpenAIRequestError` naming the check."""
    text: str | None = None
    with contextlib.suppress(UnicodeDecodeError):
        text = body.decode("utf-8")
    if text is None:
        raise OpenAIRequestError(RequestCheck.ENCODING, "the request body is not UTF-8")
    refused: tuple[RequestCheck, str] | None = None
    value: object = None
    try:
        value = _DECODER.decode(text)
    except _Refused as exc:
        refused = (exc.check, exc.message)
    except RecursionError:
        refused = (RequestCheck.NESTING, f"the JSON body nests deeper than {max_depth} levels")
    except ValueError:
        # JSONDecodeError's message quotes no input, but its .doc holds the
        # whole body: nothing of it is kept.
        refused = (RequestCheck.JSON, "the request body is not valid JSON")
    if refused is not None:
        raise OpenAIRequestError(refused[0], refused[1])
    if not isinstance(value, dict):
        raise OpenAIRequestError(RequestCheck.NOT_AN_OBJECT, "the request body is not an object")
    problem = _structure(value, max_depth)
    if problem is RequestCheck.NESTING:
        raise OpenAIRequestError(
            RequestCheck.NESTING, f"the JSON body nests deeper than {max_depth} levels"
        )
    if problem is RequestCheck.ENCODING:
        raise OpenAIRequestError(
            RequestCheck.ENCODING, "the request body holds a string that is not Unicode text"
        )
    return value
