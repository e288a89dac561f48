"""A deterministic Engine for the simulator and for tests without a model.

The output is a pure function of the prompt and the seed (a keyed hash turned
into words), so a simulated run reproduces byte for byte and tests can check
that the text really passed through the pipeline (it depends on the prompt).
Stop sequences cut it as they cut a model's (:class:`protocol.inference.StopScanner`),
and the prompt's token count is a pure function of the turns too: each word
of a turn's text, plus :data:`TURN_OVERHEAD_TOKENS` for its role markers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Sequence
from typing import Final

from actors.seams.engine import CancelToken, Chunk, GenerationParams
from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, FinishReason, StopScanner

#: Prompt tokens a turn costs beyond its words (what a chat template's role
#: markers cost a model).
TURN_OVERHEAD_TOKENS: Final = 3

_WORDS = (
    "amber",
    "basalt",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "granite",
    "harbor",
    "iris",
    "juniper",
    "kelp",
    "lumen",
    "mesa",
    "nimbus",
    "onyx",
    "prairie",
)


class ScriptedEngine:
    """Emits ``max_tokens`` words (one token each) derived from the
    conversation and seed, ending earlier only at a stop sequence."""

    def __init__(self, model_id: str = "scripted") -> None:
        self._model_id = model_id

    @property
    def model_id(self) -> str:
        return self._model_id

    def count_prompt_tokens(self, messages: Sequence[ChatTurn]) -> int:
        return sum(len(m.content.reveal_bytes().split()) + TURN_OVERHEAD_TOKENS for m in messages)

    def generate(
        self,
        messages: Sequence[ChatTurn],
        params: GenerationParams,
        cancel: CancelToken,
    ) -> Generator[Chunk, None, FinishReason]:
        h = hashlib.sha256(params.seed.to_bytes(8, "big"))
        for m in messages:
            h.update(m.role.value.encode() + b"\x00" + m.content.reveal_bytes() + b"\x00")
        stream = h.digest()
        scanner = StopScanner([stop.reveal_text() for stop in params.stop])
        for i in range(params.max_tokens):
            if cancel.cancelled:
                return FinishReason.CANCELLED
            if i and i % 32 == 0:
                stream = hashlib.sha256(stream).digest()
            word = _WORDS[stream[i % 32] % len(_WORDS)]
            text, tokens = scanner.feed(word if i == 0 else " " + word, 1)
            if text or scanner.stopped:
                yield Chunk(text=CustomerData(text), tokens=tokens)
            if scanner.stopped:
                return FinishReason.STOP
        text, tokens = scanner.flush()
        if text:
            yield Chunk(text=CustomerData(text), tokens=tokens)
        return FinishReason.LENGTH
