"""Wire messages of a generation request (registered in protocol.messages).

A request names its model and carries the chat turns, the sampling
parameters and up to four stop sequences; the serving side
answers with any number of :class:`GenerateChunk` followed by exactly one
:class:`GenerateDone` or a ``core.error`` reply (invariant I7: every accepted
request ends). Turn contents, stop sequences and chunk texts are customer
data.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Annotated

from protocol.customer_data import CustomerData
from protocol.messages import U16, U32, IntRange, MaxLen, message

#: Upper bound on one turn's text, in characters or bytes.
MAX_TURN_LEN = 256 * 1024
#: The sampling parameters every engine accepts (the wire format and the
#: Engine seam check the same ranges).
MAX_TOKENS_LIMIT = 8192
MAX_TEMPERATURE = 2.0
#: Stop sequences a request may name, and the longest one, in characters.
MAX_STOP_SEQUENCES = 4
MAX_STOP_LEN = 256


def check_sampling(max_tokens: int, temperature: float, top_p: float) -> None:
    """Raise :class:`ValueError` unless the sampling parameters are in range:
    ``max_tokens`` in [1, 8192], ``temperature`` in [0, 2], ``top_p`` in (0, 1]."""
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise ValueError(f"max_tokens must be in [1, {MAX_TOKENS_LIMIT}]")
    if not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be in [0, {MAX_TEMPERATURE:g}]")
    if not 0.0 < top_p <= 1.0:
        raise ValueError("top_p must be in (0, 1]")


def check_stop(stop: object) -> None:
    """Raise :class:`ValueError` unless ``stop`` is a tuple of at most 4
    non-empty text :class:`CustomerData`, each at most 256 characters.

    Stop sequences are customer data (they can say as much about a prompt as
    the prompt does), so they stay wrapped; the error never quotes one.
    """
    if type(stop) is not tuple or len(stop) > MAX_STOP_SEQUENCES:
        raise ValueError(f"stop is a tuple of at most {MAX_STOP_SEQUENCES} sequences")
    for sequence in stop:
        if not isinstance(sequence, CustomerData) or not sequence.is_text:
            raise ValueError("a stop sequence is text customer data")
        if not 0 < len(sequence) <= MAX_STOP_LEN:
            raise ValueError(f"a stop sequence is 1 to {MAX_STOP_LEN} characters")


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
    #: Generation ends before the first of these would be emitted (none of it
    #: is sent); the answer then ends ``stop``.
    stop: Annotated[
        tuple[Annotated[CustomerData, MaxLen(MAX_STOP_LEN)], ...], MaxLen(MAX_STOP_SEQUENCES)
    ] = ()

    def __post_init__(self) -> None:
        if not self.turns:
            raise ValueError("a request needs at least one turn")
        check_sampling(self.max_tokens, self.temperature, self.top_p)
        check_stop(self.stop)


@message("inference.chunk")
@dataclasses.dataclass(frozen=True, slots=True)
class GenerateChunk:
    text: Annotated[CustomerData, MaxLen(64 * 1024)]
    tokens: U16


@message("inference.done")
@dataclasses.dataclass(frozen=True, slots=True)
class GenerateDone:
    """The end of an answer: why it ended and its usage (tokens of the prompt
    as the model saw it, chat template included, and of the completion)."""

    finish_reason: FinishReason
    completion_tokens: U32
    prompt_tokens: U32 = 0


class StopScanner:
    """Cuts generated text before the first stop sequence, emitting none of it.

    What the wire format's ``stop`` means, for every engine: text is fed as
    it is generated, with the number of tokens it took, and :meth:`feed`
    returns what may be emitted now. The text ends where it first contains a
    stop sequence (of those completing at the same character, the longest
    is cut), whatever pieces it came in. A tail that could still become a stop
    sequence is held back until it either completes one (then everything
    from the stop sequence on is dropped and :attr:`stopped` is set) or can
    no longer (then it is emitted with the next text). Tokens go with the
    text they produced, so held-back tokens are counted with the text that
    finally goes out, and the tokens fed always add up to the tokens returned
    (those of a stop sequence with the text before it).
    """

    __slots__ = ("_held", "_held_tokens", "_stops", "stopped")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""
        self._held_tokens = 0
        self.stopped = False

    def feed(self, text: str, tokens: int) -> tuple[str, int]:
        """The text and tokens to emit after ``text`` (``("", 0)`` while held back)."""
        if self.stopped:
            raise ValueError("the text already ended at a stop sequence")
        buffer = self._held + text
        tokens += self._held_tokens
        # The text ends where it first contains a stop sequence: the one that
        # completes first, the longest of those completing there. Taking the
        # earliest *start* instead would make the cut depend on how the text
        # was split into pieces (stops "abc" and "b": "ab" then "c" ends at
        # "b", "abc" at once would end at "abc").
        ends = [(at + len(stop), at) for stop in self._stops if (at := buffer.find(stop)) >= 0]
        if ends:
            self.stopped = True
            self._held, self._held_tokens = "", 0
            return buffer[: min(ends)[1]], tokens
        keep = self._partial_stop_length(buffer)
        emit = buffer[: len(buffer) - keep]
        if not emit:
            self._held, self._held_tokens = buffer, tokens
            return "", 0
        self._held, self._held_tokens = buffer[len(emit) :], 0
        return emit, tokens

    def flush(self) -> tuple[str, int]:
        """What is still held back, when generation ended without a stop sequence."""
        held, tokens = self._held, self._held_tokens
        self._held, self._held_tokens = "", 0
        return held, tokens

    def _partial_stop_length(self, buffer: str) -> int:
        """The longest tail of ``buffer`` that begins some stop sequence."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(buffer), len(stop) - 1), longest, -1):
                if buffer.endswith(stop[:length]):
                    longest = length
                    break
        return longest
