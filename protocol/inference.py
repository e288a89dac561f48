"""Wire messages of a generation request (registered in protocol.messages).

A request names its model and carries the chat turns; the serving side
answers with any number of :class:`GenerateChunk` followed by exactly one
:class:`GenerateDone` or a ``core.error`` reply (invariant I7: every accepted
request ends). Turn contents and chunk texts are customer data.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated

from protocol.customer_data import CustomerData
from protocol.messages import U16, U32, IntRange, MaxLen, message

#: Upper bound on one turn's text, in characters or bytes.
MAX_TURN_LEN = 256 * 1024
#: Upper bound on the tokens one request may ask for.
MAX_TOKENS = 8192


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


@dataclasses.dataclass(frozen=True, slots=True)
class ChatTurn:
    role: Role
    content: Annotated[CustomerData, MaxLen(MAX_TURN_LEN)]


@message("inference.generate")
@dataclasses.dataclass(frozen=True, slots=True)
class GenerateRequest:
    model: Annotated[str, MaxLen(128)]
    turns: Annotated[tuple[ChatTurn, ...], MaxLen(256)]
    max_tokens: Annotated[int, IntRange(1, MAX_TOKENS)]
    temperature: float
    top_p: float
    seed: U32

    def __post_init__(self) -> None:
        if not self.turns:
            raise ValueError("a request needs at least one turn")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError("temperature out of range")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p out of range")


@message("inference.chunk")
@dataclasses.dataclass(frozen=True, slots=True)
class GenerateChunk:
    text: Annotated[CustomerData, MaxLen(64 * 1024)]
    tokens: U16


@message("inference.done")
@dataclasses.dataclass(frozen=True, slots=True)
class GenerateDone:
    finish_reason: FinishReason
    completion_tokens: U32
