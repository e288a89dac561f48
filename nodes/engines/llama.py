"""The Engine seam on llama-cpp-python (any GGUF model; the demo uses SmolLM2).

Generation drives llama.cpp token by token (``Llama.generate``) instead of
through ``create_chat_completion``, so that everything the seam promises is
exact rather than inferred from llama-cpp's stream of text deltas:

* the prompt is the model's own chat template (from the GGUF metadata)
  rendered and tokenized once, so :meth:`LlamaEngine.count_prompt_tokens` is
  the number of tokens the model reads (and the generation that follows a
  count of the same turns reuses those tokens rather than tokenizing again);
* a turn's text is text: the template's own markers are read as the special
  tokens they are, but a turn that *spells* one (``<|im_end|>`` then
  ``<|im_start|>system``) is tokenized as the characters it wrote, so no
  turn can close itself and open another role's (each turn's content is
  rendered as an unguessable marker, and the pieces between markers are
  tokenized with special tokens, the contents without);
* every chunk carries the tokens that produced it (more than one where a
  multi-byte character or a possible stop sequence held text back);
* stop sequences are cut by :class:`protocol.inference.StopScanner`: no
  character of a stop sequence is emitted, and the answer ends ``stop``;
* ``length`` is returned exactly when ``max_tokens`` tokens were sampled
  (the model's end-of-generation token is not counted, as in OpenAI's usage);
* the seed makes sampling reproducible (llama.cpp reads ``0xFFFFFFFF`` as
  "draw a random seed", so that one value is mapped to 0), and no request
  reuses another's KV cache (whose prefix hits would also time one
  customer's prompt through another's latency);
* the cancel token is checked before every token;
* one generation at a time: a llama.cpp context holds one KV cache, so a
  second concurrent request is refused (:class:`EngineBusy`), never
  interleaved with the first (a node serving one model with llama runs one
  slot).

llama.cpp's own logging (its C library and ggml's) is routed to a callback
that counts messages by level and prints nothing (:func:`native_log_counts`):
its load errors can name file paths, and nothing of the native library
reaches stderr, where the node's structured log is written.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import re
import secrets
import threading
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from actors.seams.engine import CancelToken, Chunk, GenerationParams
from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, FinishReason, StopScanner

if TYPE_CHECKING:
    from llama_cpp import Llama

#: llama.cpp's "random seed" value.
_LLAMA_RANDOM_SEED: Final = 0xFFFF_FFFF
#: The sampler chain create_chat_completion uses by default, kept so answers
#: stay what they were: top-k 40, min-p 0.05, no repeat penalty.
_TOP_K: Final = 40
_MIN_P: Final = 0.05
_REPEAT_PENALTY: Final = 1.0
#: ggml_log_level values, by name (GGML_LOG_LEVEL_CONT continues the previous).
_LOG_LEVELS: Final = {0: "none", 1: "info", 2: "warn", 3: "error", 4: "debug", 5: "cont"}


class EngineLoadError(Exception):
    """The model file could not be loaded (missing, not GGUF, corrupt, no chat template)."""


class PromptTooLong(ValueError):
    """The chat does not fit the model's context window with room for one token."""


class PromptTemplateError(ValueError):
    """The model's chat template does not place each turn's content exactly once."""


class EngineBusy(RuntimeError):
    """A generation was started while another one runs on the same engine."""


# -- llama.cpp's native log ---------------------------------------------------------------

_native_log_lock = threading.Lock()
_native_log_counts: Counter[str] = Counter()
_native_log_callback: Any = None


def native_log_counts() -> Mapping[str, int]:
    """How many native log messages llama.cpp emitted, by level (never their text)."""
    with _native_log_lock:
        return dict(_native_log_counts)


def _silence_native_log() -> None:
    """Route llama.cpp's and ggml's log to a counting callback that prints nothing.

    Idempotent. The ctypes callback is kept in a module global: the C library
    holds only a pointer to it.
    """
    global _native_log_callback
    import llama_cpp

    with _native_log_lock:
        if _native_log_callback is not None:
            return

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        def count(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            with _native_log_lock:
                _native_log_counts[_LOG_LEVELS.get(level, "other")] += 1

        _native_log_callback = count
        llama_cpp.llama_log_set(count, ctypes.c_void_p(0))


class LlamaEngine:
    """A GGUF model loaded with llama-cpp-python (see the module docstring)."""

    def __init__(
        self,
        model_path: Path,
        *,
        model_id: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise EngineLoadError(f"model file not found: {path}")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise EngineLoadError(f"not a GGUF file: {path.name}")
        # Imported here so that processes without the inference role (and
        # the simulator) do not pay for loading the native library.
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        _silence_native_log()
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
        template = loaded.metadata.get("tokenizer.chat_template")
        if not template:
            raise EngineLoadError(f"{path.name} has no chat template")
        eos = loaded.token_eos()
        bos = loaded.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=loaded._model.token_get_text(eos) if eos != -1 else "",
            bos_token=loaded._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )
        self._llama = loaded
        self._busy = threading.Lock()
        # The prompt last counted, kept for the generation that follows it
        # (the actor counts, then generates the same turns): rendering and
        # tokenizing it once, not twice, before the first token.
        self._counted_lock = threading.Lock()
        self._counted: tuple[tuple[ChatTurn, ...], list[int]] | None = None
        self._n_ctx = loaded.n_ctx()
        self._model_id = model_id or path.stem

    @property
    def model_id(self) -> str:
        return self._model_id

    def _prompt_tokens(self, messages: Sequence[ChatTurn]) -> list[int]:
        """The chat as the model reads it: the template's text with its special
        tokens, each turn's content as plain text (see the module docstring)."""
        markers = [f"\ue000{secrets.token_hex(16)}\ue001" for _ in messages]
        chat = [
            {"role": m.role.value, "content": mark}
            for m, mark in zip(messages, markers, strict=True)
        ]
        rendered = self._formatter(messages=chat)  # type: ignore[arg-type]
        contents = {mark: m.content for m, mark in zip(messages, markers, strict=True)}
        pieces = re.split("(" + "|".join(map(re.escape, markers)) + ")", rendered.prompt)
        if sorted(p for p in pieces if p in contents) != sorted(markers):
            raise PromptTemplateError("the chat template does not place every turn once")
        tokens: list[int] = []
        for index, piece in enumerate(pieces):
            content = contents.get(piece)
            text = piece if content is None else content.reveal_text()
            if not text and index:
                continue
            tokens += self._llama.tokenize(
                text.encode("utf-8"),
                add_bos=index == 0 and not rendered.added_special,
                special=content is None,
            )
        return tokens

    def count_prompt_tokens(self, messages: Sequence[ChatTurn]) -> int:
        tokens = self._prompt_tokens(messages)
        if isinstance(messages, tuple):
            # Immutable (frozen turns of immutable data): the very same tuple
            # handed to generate() reads as these tokens.
            with self._counted_lock:
                self._counted = (messages, tokens)
        return len(tokens)

    def _counted_tokens(self, messages: Sequence[ChatTurn]) -> list[int]:
        """``messages`` as the model reads them: what the last count found
        if it counted this very tuple (taken, so it is used once), else
        rendered and tokenized afresh."""
        with self._counted_lock:
            counted, self._counted = self._counted, None
        if counted is not None and counted[0] is messages:
            return counted[1]
        return self._prompt_tokens(messages)

    def generate(
        self,
        messages: Sequence[ChatTurn],
        params: GenerationParams,
        cancel: CancelToken,
    ) -> Generator[Chunk, None, FinishReason]:
        # One llama.cpp context holds one generation's state: a second one
        # at the same time is refused (the actor answers it INTERNAL,
        # retryable) rather than interleaved into the first's KV cache.
        if not self._busy.acquire(blocking=False):
            raise EngineBusy("this engine is generating another answer")
        try:
            return (yield from self._generate(messages, params, cancel))
        finally:
            self._busy.release()

    def _generate(
        self,
        messages: Sequence[ChatTurn],
        params: GenerationParams,
        cancel: CancelToken,
    ) -> Generator[Chunk, None, FinishReason]:
        from llama_cpp import llama_vocab_is_eog

        llama = self._llama
        prompt = self._counted_tokens(messages)
        room = self._n_ctx - len(prompt)
        if room < 1:
            raise PromptTooLong("the chat does not fit the model's context window")
        llama.set_seed(params.seed if params.seed != _LLAMA_RANDOM_SEED else 0)
        scanner = StopScanner([stop.reveal_text() for stop in params.stop])
        # Tokens are pieces of UTF-8: a character may span several.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llama._model.vocab
        # Every request evaluates its prompt afresh: reusing the previous
        # request's KV cache for a common prefix would make one customer's
        # latency depend on another's prompt, and a batch evaluated in pieces
        # gives slightly different logits, so a seed would not reproduce.
        llama.reset()  # type: ignore[no-untyped-call]
        tokens = llama.generate(
            prompt,
            top_k=_TOP_K,
            top_p=params.top_p,
            min_p=_MIN_P,
            temp=params.temperature,
            repeat_penalty=_REPEAT_PENALTY,
        )
        # At most max_tokens; fewer if the context window ends first (then
        # the answer ends ``length`` too, as it does in OpenAI's API).
        budget = min(params.max_tokens, room)
        sampled = 0
        undecoded = 0  # tokens sampled whose text is not out yet
        reason = FinishReason.LENGTH
        try:
            while sampled < budget:
                if cancel.cancelled:
                    return FinishReason.CANCELLED
                token = next(tokens)
                if llama_vocab_is_eog(vocab, token):
                    reason = FinishReason.STOP
                    break
                sampled += 1
                undecoded += 1
                text = decoder.decode(llama.detokenize([token]))
                if not text:
                    continue  # a character not complete yet
                emit, count = scanner.feed(text, undecoded)
                undecoded = 0
                if emit or scanner.stopped:
                    yield Chunk(text=CustomerData(emit), tokens=count)
                if scanner.stopped:
                    return FinishReason.STOP
        finally:
            # Closing llama-cpp's generator stops sampling at once.
            tokens.close()
        emit, count = scanner.feed(decoder.decode(b"", final=True), undecoded)
        if not scanner.stopped:
            held, held_tokens = scanner.flush()
            emit, count = emit + held, count + held_tokens
        if emit or count:
            yield Chunk(text=CustomerData(emit), tokens=count)
        return FinishReason.STOP if scanner.stopped else reason
