"""The Engine seam on llama-cpp-python (any GGUF model; the demo uses SmolLM2).

llama.cpp's own logging goes to the C library's stderr; ``verbose=False``
keeps it to load errors, and it never prints prompts at that level.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from actors.seams.engine import CancelToken, Chunk, GenerationParams
from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn


class EngineLoadError(Exception):
    """The model file could not be loaded (missing, not GGUF, corrupt)."""


class LlamaEngine:
    """A GGUF model loaded with llama-cpp-python."""

    def __init__(
        self,
        model_path: Path,
        *,
        model_id: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
    ) -> None:
        # Imported here so that processes without the inference role (and
        # the simulator) do not pay for loading the native library.
        from llama_cpp import Llama

        path = Path(model_path)
        if not path.is_file():
            raise EngineLoadError(f"model file not found: {path}")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise EngineLoadError(f"not a GGUF file: {path.name}")
        loaded: Llama | None = None
        with contextlib.suppress(ValueError, RuntimeError):
            loaded = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads or max(1, os.cpu_count() or 1),
                verbose=False,
            )
        if loaded is None:
            # Raised outside the handler: llama.cpp's exception stays behind.
            raise EngineLoadError(f"llama.cpp could not load {path.name}")
        self._llama = loaded
        self._model_id = model_id or path.stem

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(
        self,
        messages: Sequence[ChatTurn],
        params: GenerationParams,
        cancel: CancelToken,
    ) -> Iterator[Chunk]:
        chat = [{"role": m.role.value, "content": m.content.reveal_text()} for m in messages]
        # With stream=True llama-cpp returns an iterator of chunk dicts.
        stream = cast(
            Iterator[Any],
            self._llama.create_chat_completion(
                messages=chat,  # type: ignore[arg-type]
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                seed=params.seed,
                stream=True,
            ),
        )
        try:
            for event in stream:
                if cancel.cancelled:
                    return
                delta = event["choices"][0].get("delta", {})
                text = delta.get("content")
                if text:
                    yield Chunk(text=CustomerData(text), tokens=1)
        finally:
            # Closing the llama-cpp generator stops sampling immediately.
            close = getattr(stream, "close", None)
            if close is not None:
                close()
