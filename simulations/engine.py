"""A deterministic Engine for the simulator and for tests without a model.

The output is a pure function of the prompt and the seed (a keyed hash turned
into words), so a simulated run reproduces byte for byte and tests can check
that the text really passed through the pipeline (it depends on the prompt).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

from actors.seams.engine import CancelToken, Chunk, GenerationParams
from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn

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
    """Emits ``max_tokens`` words derived from the conversation and seed."""

    def __init__(self, model_id: str = "scripted") -> None:
        self._model_id = model_id

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(
        self,
        messages: Sequence[ChatTurn],
        params: GenerationParams,
        cancel: CancelToken,
    ) -> Iterator[Chunk]:
        h = hashlib.sha256(params.seed.to_bytes(8, "big"))
        for m in messages:
            h.update(m.role.value.encode() + b"\x00" + m.content.reveal_bytes() + b"\x00")
        stream = h.digest()
        for i in range(params.max_tokens):
            if cancel.cancelled:
                return
            if i and i % 32 == 0:
                stream = hashlib.sha256(stream).digest()
            word = _WORDS[stream[i % 32] % len(_WORDS)]
            yield Chunk(text=CustomerData(word if i == 0 else " " + word), tokens=1)
