"""Foundational message types every peer understands."""

from __future__ import annotations

import dataclasses
import enum

from protocol.messages._registry import message
from protocol.messages._schema import U64


@message("core.ping")
@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    """Liveness probe; the peer answers with a :class:`Pong` echoing ``nonce``."""

    nonce: U64


@message("core.pong")
@dataclasses.dataclass(frozen=True, slots=True)
class Pong:
    nonce: U64


class ErrorCode(enum.IntEnum):
    """Why a request failed. Codes are wire values: never renumber, only add."""

    BAD_REQUEST = 1
    UNAUTHORIZED = 2
    FORBIDDEN = 3
    NOT_FOUND = 4
    UNSUPPORTED = 5
    OVERLOADED = 6
    DEADLINE_EXCEEDED = 7
    CANCELLED = 8
    UNAVAILABLE = 9
    INTERNAL = 10


@message("core.error")
@dataclasses.dataclass(frozen=True, slots=True)
class ErrorReply:
    """The explicit failure that ends a request (invariant I7).

    It carries a code and whether retrying elsewhere may help; deliberately no
    free text, which could end up quoting a request.
    """

    code: ErrorCode
    retryable: bool
