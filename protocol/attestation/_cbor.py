"""Strict CBOR decoding for attestation evidence.

cbor2 decodes far more than an attestation document may contain (dates,
bignums, shared references, sets, regular expressions ...). Evidence is
decoded here with every semantic tag refused, duplicate map keys refused,
trailing bytes refused and a small nesting limit; afterwards the value is
walked once to refuse floats, simple values and ``undefined``. What remains
is made only of ``dict``, ``list``, ``bytes``, ``str``, ``int``, ``bool`` and
``None``.

Indefinite-length items stay allowed: EC2 NitroTPM encodes its payload as an
indefinite-length map, and a verifier must accept exactly what AWS produces.
"""

from __future__ import annotations

import io
from typing import NoReturn, cast

import cbor2

from protocol.attestation._errors import Check, MalformedEvidence

# Attestation documents nest three containers deep at most (payload map ->
# PCR map / CA bundle -> byte strings); the outer COSE array adds one more.
MAX_DEPTH = 6


class _TagRefused(Exception):
    pass


def _refuse_tag(*_args: object) -> NoReturn:
    raise _TagRefused


# Every tag cbor2 interprets by itself. Overriding them routes each one to the
# refusal; any other tag reaches ``tag_hook`` and is refused there.
_BUILTIN_TAGS = (
    0, 1, 2, 3, 4, 5, 21, 22, 23, 24, 25, 28, 29, 30, 32, 33, 34, 35, 36, 37,
    38, 52, 54, 100, 256, 258, 260, 261, 262, 263, 264, 265, 266, 267, 268,
    269, 270, 271, 1004, 1040, 55799,
)  # fmt: skip
_REFUSE_ALL = dict.fromkeys(_BUILTIN_TAGS, _refuse_tag)

# Exact types: cbor2 returns plain dict/list/bytes/str/int/bool/None for the
# items evidence uses and other classes for everything else.
_SCALAR_TYPES = frozenset({bytes, str, int, bool, type(None)})


def decode_strict(data: bytes, *, what: str) -> object:
    """Decode exactly one strict CBOR item that spans all of ``data``."""
    stream = io.BytesIO(data)
    decoded = False
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=_refuse_tag,
            semantic_decoders=_REFUSE_ALL,
            max_depth=MAX_DEPTH,
            allow_indefinite=True,
            allow_duplicate_keys=False,
        )
        value: object = decoder.decode()
        decoded = True
    except (cbor2.CBORDecodeError, _TagRefused, RecursionError, ValueError, TypeError):
        pass
    if not decoded:
        # Decoder exceptions hold document bytes (a UnicodeDecodeError its
        # whole text string), so only what failed goes out, raised outside the
        # handler so that not even __context__ keeps them.
        raise MalformedEvidence(
            Check.CBOR, f"{what} is not strict CBOR (malformed, tagged or duplicate keys)"
        )
    if stream.tell() != len(data):
        raise MalformedEvidence(Check.CBOR, f"{what} has trailing bytes after its CBOR item")
    _check_plain(value, what)
    return value


def _check_plain(value: object, what: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _SCALAR_TYPES:
            continue
        if kind is dict:
            mapping = cast(dict[object, object], item)
            stack.extend(mapping)
            stack.extend(mapping.values())
        elif kind is list:
            stack.extend(cast(list[object], item))
        else:
            raise MalformedEvidence(
                Check.CBOR, f"{what} holds a CBOR item of a kind evidence never uses"
            )
