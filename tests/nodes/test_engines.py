"""The Engine seam's two implementations: llama.cpp on the demo model, and
the scripted engine the simulator uses."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path

import pytest

from actors.seams.engine import CancelToken, Chunk, GenerationParams
from nodes.devcluster import demo_model_path
from nodes.engines.llama import EngineBusy, EngineLoadError, LlamaEngine, native_log_counts
from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, FinishReason, Role
from simulations.engine import ScriptedEngine

#: A prompt the demo model answers at length (greedy: always the same answer).
LONG_ANSWER = "Count from one to ten, separated by commas."


@pytest.fixture(scope="module")
def llama() -> LlamaEngine:
    return LlamaEngine(demo_model_path(), model_id="smollm2")


def _ask(text: str) -> list[ChatTurn]:
    return [ChatTurn(Role.USER, CustomerData(text))]


def test_llama_streams_redacted_chunks_within_max_tokens(llama: LlamaEngine) -> None:
    chunks = list(
        llama.generate(
            _ask("Count from one to ten."), GenerationParams(max_tokens=12), CancelToken()
        )
    )
    assert 0 < len(chunks) <= 12
    assert all(isinstance(c.text, CustomerData) for c in chunks)
    assert "".join(c.text.reveal_text() for c in chunks).strip()


def test_llama_is_deterministic_at_temperature_zero(llama: LlamaEngine) -> None:
    params = GenerationParams(max_tokens=10, temperature=0.0)
    first = [
        c.text.reveal_text() for c in llama.generate(_ask("Name a colour."), params, CancelToken())
    ]
    second = [
        c.text.reveal_text() for c in llama.generate(_ask("Name a colour."), params, CancelToken())
    ]
    assert first == second


def test_cancellation_reaches_the_generation_loop(llama: LlamaEngine) -> None:
    cancel = CancelToken()
    seen = 0
    for _ in llama.generate(
        _ask("Write a long story about the sea."), GenerationParams(max_tokens=200), cancel
    ):
        seen += 1
        if seen == 3:
            cancel.cancel()
    assert seen == 3


def test_missing_and_non_gguf_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match="not found"):
        LlamaEngine(tmp_path / "absent.gguf")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(EngineLoadError, match="not a GGUF"):
        LlamaEngine(bogus)


def test_scripted_engine_depends_on_prompt_and_seed_only() -> None:
    engine = ScriptedEngine()
    params = GenerationParams(max_tokens=40, seed=7)
    a = "".join(c.text.reveal_text() for c in engine.generate(_ask("x"), params, CancelToken()))
    b = "".join(c.text.reveal_text() for c in engine.generate(_ask("x"), params, CancelToken()))
    c = "".join(c.text.reveal_text() for c in engine.generate(_ask("y"), params, CancelToken()))
    assert a == b != c
    assert len(a.split()) == 40


def test_generation_params_are_bounded() -> None:
    for bad in (
        {"max_tokens": 0},
        {"temperature": 3.0},
        {"top_p": 0.0},
        {"stop": (CustomerData(""),)},
        {"stop": (CustomerData("x" * 257),)},
        {"stop": tuple(CustomerData(str(i)) for i in range(5))},
        {"stop": ("not wrapped",)},
    ):
        with pytest.raises(ValueError):
            GenerationParams(**bad)  # type: ignore[arg-type]


def _run(generation: Generator[Chunk, None, FinishReason]) -> tuple[list[Chunk], FinishReason]:
    chunks: list[Chunk] = []
    while True:
        try:
            chunks.append(next(generation))
        except StopIteration as end:
            return chunks, end.value


def _text(chunks: Sequence[Chunk]) -> str:
    return "".join(c.text.reveal_text() for c in chunks)


def test_llama_reaching_max_tokens_ends_length_with_exact_token_counts(llama: LlamaEngine) -> None:
    chunks, reason = _run(
        llama.generate(_ask(LONG_ANSWER), GenerationParams(max_tokens=20), CancelToken())
    )
    assert reason is FinishReason.LENGTH
    assert sum(c.tokens for c in chunks) == 20


def test_llama_counts_the_prompt_as_llama_cpp_does(llama: LlamaEngine) -> None:
    # llama-cpp's own chat completion, on the same template, is the reference.
    reference = llama._llama.create_chat_completion(
        messages=[{"role": "user", "content": LONG_ANSWER}], max_tokens=1
    )
    assert llama.count_prompt_tokens(_ask(LONG_ANSWER)) == reference["usage"]["prompt_tokens"]  # type: ignore[index]
    two_turns = [*_ask(LONG_ANSWER), ChatTurn(Role.ASSISTANT, CustomerData("One, two."))]
    assert llama.count_prompt_tokens(two_turns) > llama.count_prompt_tokens(_ask(LONG_ANSWER))


def test_llama_generates_from_the_prompt_it_counted_tokenizing_it_once(
    llama: LlamaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns = tuple(_ask(LONG_ANSWER))
    params = GenerationParams(max_tokens=12)
    uncounted = _run(llama.generate(turns, params, CancelToken()))
    tokenized: list[Sequence[ChatTurn]] = []
    tokenize = llama._prompt_tokens

    def counting(messages: Sequence[ChatTurn]) -> list[int]:
        tokenized.append(messages)
        return tokenize(messages)

    monkeypatch.setattr(llama, "_prompt_tokens", counting)
    assert llama.count_prompt_tokens(turns) > 0
    assert _run(llama.generate(turns, params, CancelToken())) == uncounted
    assert tokenized == [turns]
    # A count of other turns is never taken for these.
    llama.count_prompt_tokens(tuple(_ask("Name a colour.")))
    assert _run(llama.generate(turns, params, CancelToken())) == uncounted
    assert len(tokenized) == 3


def test_llama_stops_before_a_stop_sequence_and_emits_none_of_it(llama: LlamaEngine) -> None:
    params = GenerationParams(max_tokens=24)
    full = _text(_run(llama.generate(_ask(LONG_ANSWER), params, CancelToken()))[0])
    # Two words from the middle of the answer: several tokens, several chunks.
    words = full.split()
    stop = " " + words[2] + " " + words[3]
    assert stop in full
    chunks, reason = _run(
        llama.generate(
            _ask(LONG_ANSWER),
            GenerationParams(max_tokens=24, stop=(CustomerData(stop),)),
            CancelToken(),
        )
    )
    assert reason is FinishReason.STOP
    assert _text(chunks) == full[: full.index(stop)]
    assert sum(c.tokens for c in chunks) < 24


def test_llama_holds_back_a_possible_stop_sequence_and_counts_its_tokens(
    llama: LlamaEngine,
) -> None:
    params = GenerationParams(max_tokens=24)
    plain, plain_reason = _run(llama.generate(_ask(LONG_ANSWER), params, CancelToken()))
    full = _text(plain)
    words = full.split()
    # Begins like the answer's middle, then differs: held back, then let go.
    near_miss = " " + words[2] + " " + words[3] + "\u2603"
    chunks, reason = _run(
        llama.generate(
            _ask(LONG_ANSWER),
            GenerationParams(max_tokens=24, stop=(CustomerData(near_miss),)),
            CancelToken(),
        )
    )
    assert _text(chunks) == full
    assert reason is plain_reason
    assert sum(c.tokens for c in chunks) == sum(c.tokens for c in plain)
    assert max(c.tokens for c in chunks) > 1  # the held-back words came out as one chunk


def test_llama_sampling_follows_the_seed(llama: LlamaEngine) -> None:
    def sample(seed: int) -> str:
        params = GenerationParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=seed)
        return _text(_run(llama.generate(_ask("Tell me a story."), params, CancelToken()))[0])

    first = sample(11)
    assert sample(11) == first
    assert any(sample(seed) != first for seed in (12, 13, 14))


def test_llama_runs_one_generation_at_a_time(llama: LlamaEngine) -> None:
    running = llama.generate(_ask(LONG_ANSWER), GenerationParams(max_tokens=4), CancelToken())
    next(running)
    with pytest.raises(EngineBusy):
        next(llama.generate(_ask(LONG_ANSWER), GenerationParams(max_tokens=4), CancelToken()))
    running.close()
    assert _run(llama.generate(_ask(LONG_ANSWER), GenerationParams(max_tokens=4), CancelToken()))


def test_llama_native_log_never_reaches_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    before = sum(native_log_counts().values())
    engine = LlamaEngine(demo_model_path(), model_id="smollm2", n_ctx=256)
    _run(engine.generate(_ask(LONG_ANSWER), GenerationParams(max_tokens=8), CancelToken()))
    out, err = capfd.readouterr()
    assert err == ""
    assert out == ""
    # llama.cpp did log while loading: into the counting callback, not the terminal.
    assert sum(native_log_counts().values()) > before


def test_scripted_engine_stops_before_a_stop_sequence() -> None:
    engine = ScriptedEngine()
    full = "".join(
        c.text.reveal_text()
        for c in engine.generate(_ask("x"), GenerationParams(max_tokens=12, seed=7), CancelToken())
    )
    stop = full.split(" ")[5]
    chunks, reason = _run(
        engine.generate(
            _ask("x"),
            GenerationParams(max_tokens=12, seed=7, stop=(CustomerData(stop),)),
            CancelToken(),
        )
    )
    assert reason is FinishReason.STOP
    assert _text(chunks) == full[: full.index(stop)]
    assert engine.count_prompt_tokens(_ask("x")) < engine.count_prompt_tokens(_ask("x y z"))


def test_paced_engine_passes_the_wrapped_engines_answer_through_at_its_pace() -> None:
    import time

    from nodes.engines.paced import PacedEngine

    turns = _ask("pace me")
    params = GenerationParams(4, 1.0, 1.0, 9)
    paced = PacedEngine(ScriptedEngine("scripted"), 0.05)
    assert paced.model_id == "scripted"
    assert paced.count_prompt_tokens(turns) == ScriptedEngine().count_prompt_tokens(turns)
    started = time.monotonic()
    generator = paced.generate(turns, params, CancelToken())
    texts: list[str] = []
    try:
        while True:
            texts.append(next(generator).text.reveal_text())
    except StopIteration as end:
        finish = end.value
    assert time.monotonic() - started >= 4 * 0.05
    expected = [
        c.text.reveal_text() for c in ScriptedEngine().generate(turns, params, CancelToken())
    ]
    assert texts == expected and finish is FinishReason.LENGTH
    cancel = CancelToken()
    cancel.cancel()
    assert list(paced.generate(turns, params, cancel)) == []
    with pytest.raises(ValueError):
        PacedEngine(ScriptedEngine(), 0.0)
