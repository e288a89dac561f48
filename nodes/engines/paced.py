"""An engine at a steady pace: each chunk of a wrapped engine after a pause.

The scripted engine answers at once; a development cluster that should show
streaming, queues filling up and a node lost in the middle of an answer
(``[inference] token_interval_s`` with ``engine = "scripted"``) runs it
through :class:`PacedEngine`, which waits ``interval_s`` before each chunk.
The pause runs where the engine's steps run, in the inference actor's
worker thread, and a cancelled generation still stops within one chunk.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence

from actors.seams.engine import CancelToken, Chunk, Engine, GenerationParams
from protocol.inference import ChatTurn, FinishReason


class PacedEngine:
    """``engine``, one chunk every ``interval_s`` seconds at most."""

    def __init__(self, engine: Engine, interval_s: float) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError("the interval is a positive number of seconds")
        self._engine = engine
        self._interval_s = interval_s

    @property
    def model_id(self) -> str:
        return self._engine.model_id

    def count_prompt_tokens(self, messages: Sequence[ChatTurn]) -> int:
        return self._engine.count_prompt_tokens(messages)

    def generate(
        self,
        messages: Sequence[ChatTurn],
        params: GenerationParams,
        cancel: CancelToken,
    ) -> Generator[Chunk, None, FinishReason]:
        inner = self._engine.generate(messages, params, cancel)
        while True:
            time.sleep(self._interval_s)
            try:
                chunk = next(inner)
            except StopIteration as end:
                finish: FinishReason = end.value
                break
            yield chunk
        return finish
