"""The Engine seam: text generation, as the inference actor sees it.

Production: :class:`nodes.engines.llama.LlamaEngine` (llama-cpp-python over
a GGUF file). Simulation and most tests: :class:`simulations.engine.ScriptedEngine`,
which produces deterministic output without a model.

Generation is blocking CPU work, so :meth:`Engine.generate` is a plain
iterator meant to run in a worker thread; the caller stops it by setting the
:class:`CancelToken` (checked between tokens) or by closing the iterator.
Prompts and completions are customer data and stay wrapped in
:class:`CustomerData` on both sides of this seam. A chat is a sequence of the
wire format's own :class:`~protocol.inference.ChatTurn` (one definition of a
turn, its roles and the sampling ranges: :mod:`protocol.inference`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, check_sampling


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_sampling(self.max_tokens, self.temperature, self.top_p)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of streamed output: text plus the number of tokens it took."""

    text: CustomerData
    tokens: int


class CancelToken:
    """Set from any thread; the generation loop checks it between tokens."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class Engine(Protocol):
    """A loaded model that turns a chat into streamed text."""

    @property
    def model_id(self) -> str:
        """A name for routing and metrics (not customer data)."""
        ...

    def generate(
        self,
        messages: Sequence[ChatTurn],
        params: GenerationParams,
        cancel: CancelToken,
    ) -> Iterator[Chunk]:
        """Yield output chunks until the model stops, ``max_tokens`` is
        reached, or ``cancel`` is set. Blocking: run it in a worker thread."""
        ...
