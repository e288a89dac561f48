"""The Engine seam: text generation, as the inference actor sees it.

Production: :class:`nodes.engines.llama.LlamaEngine` (llama-cpp-python over
a GGUF file). Simulation and most tests: :class:`simulations.engine.ScriptedEngine`,
which produces deterministic output without a model.

Generation is blocking CPU work, so :meth:`Engine.generate` is a plain
generator meant to run in a worker thread; the caller stops it by setting the
:class:`CancelToken` (checked between tokens) or by closing the generator.
Its return value says why it ended (``stop``: the model's end of text or a
stop sequence; ``length``: ``max_tokens`` tokens), because only the engine
knows whether its last token completed a stop sequence: counting chunks
cannot tell ``length`` from a stop sequence in the last token.

The prompt's token count is a method of its own,
:meth:`Engine.count_prompt_tokens`, rather than a field of the first chunk:
it is known before any token is generated, and an answer that ends before
its first chunk (a stop sequence at once, a cancellation) still reports it.
Prompts and completions are customer data and stay wrapped in
:class:`CustomerData` on both sides of this seam. A chat is a sequence of the
wire format's own :class:`~protocol.inference.ChatTurn` (one definition of a
turn, its roles and the sampling ranges: :mod:`protocol.inference`).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, FinishReason, check_sampling, check_stop


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """A request's sampling parameters and stop sequences (the wire format's ranges).

    Engines end the text before the first stop sequence and emit none of it
    (:class:`protocol.inference.StopScanner` does this for both engines)."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[CustomerData, ...] = ()

    def __post_init__(self) -> None:
        check_sampling(self.max_tokens, self.temperature, self.top_p)
        check_stop(self.stop)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of streamed output: text plus the number of tokens it took
    (the tokens sampled since the previous chunk; more than one where text
    was held back, e.g. a multi-byte character or a possible stop sequence).
    The text may be empty where tokens produced nothing to emit (the tokens of
    a stop sequence); the tokens of every chunk add up to the completion's."""

    text: CustomerData
    tokens: int


class CancelToken:
    """Set from any thread; the generation loop checks it between tokens.

    A token made with a ``parent`` is cancelled as soon as its parent is, and
    may also be cancelled alone: the inference actor hands the engine such a
    token so that it can stop a generation for reasons of its own (the
    requester is gone) without marking the request's token cancelled.
    """

    __slots__ = ("_event", "_parent")

    def __init__(self, parent: CancelToken | None = None) -> None:
        self._event = threading.Event()
        self._parent = parent

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        parent = self._parent
        return self._event.is_set() or (parent is not None and parent.cancelled)


class Engine(Protocol):
    """A loaded model that turns a chat into streamed text."""

    @property
    def model_id(self) -> str:
        """A name for routing and metrics (not customer data)."""
        ...

    def count_prompt_tokens(self, messages: Sequence[ChatTurn]) -> int:
        """The number of tokens the model reads for ``messages``, as
        :meth:`generate` feeds them (chat template included). Blocking."""
        ...

    def generate(
        self,
        messages: Sequence[ChatTurn],
        params: GenerationParams,
        cancel: CancelToken,
    ) -> Generator[Chunk, None, FinishReason]:
        """Yield output chunks until the model stops, ``max_tokens`` tokens
        were generated, or ``cancel`` is set; return why it ended
        (:attr:`FinishReason.LENGTH` exactly when ``max_tokens`` tokens were
        generated and no stop sequence completed). Blocking: run it in a
        worker thread."""
        ...
