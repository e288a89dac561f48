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
#: Stop sequences a request may carry, and the length of each.
MAX_STOP_SEQUENCES = 4
MAX_STOP_LEN = 256
#: The sampling parameters every engine accepts (the wire format and the
#: Engine seam check the same ranges).
MAX_TOKENS_LIMIT = 8192
MAX_TEMPERATURE = 2.0


def check_sampling(max_tokens: int, temperature: float, top_p: float) -> None:
    """Raise :class:`ValueError` unless the sampling parameters are in range:
    ``max_tokens`` in [1, 8192], ``temperature`` in [0, 2], ``top_p`` in (0, 1]."""
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise ValueError(f"max_tokens must be in [1, {MAX_TOKENS_LIMIT}]")
    if not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be in [0, {MAX_TEMPERATURE:g}]")
    if not 0.0 < top_p <= 1.0:
        raise ValueError("top_p must be in (0, 1]")


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
    max_tokens: Annotated[int, IntRange(1, MAX_TOKENS_LIMIT)]
    temperature: float
    top_p: float
    seed: U32
    stop: Annotated[
        tuple[Annotated[CustomerData, MaxLen(MAX_STOP_LEN)], ...], MaxLen(MAX_STOP_SEQUENCES)
    ] = ()

    def __post_init__(self) -> None:
        if not self.turns:
            raise ValueError("a request needs at least one turn")
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not 0 < len(s) <= MAX_STOP_LEN for s in self.stop):
            raise ValueError(f"a stop sequence has 1 to {MAX_STOP_LEN} characters")
        check_sampling(self.max_tokens, self.temperature, self.top_p)


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
    prompt_tokens: U32 = 0
