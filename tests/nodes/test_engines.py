"""The Engine seam's two implementations: llama.cpp on the demo model, and
the scripted engine the simulator uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.seams.engine import CancelToken, GenerationParams
from nodes.demo import demo_model_path
from nodes.engines.llama import EngineLoadError, LlamaEngine
from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, Role
from simulations.engine import ScriptedEngine


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
    for bad in ({"max_tokens": 0}, {"temperature": 3.0}, {"top_p": 0.0}):
        with pytest.raises(ValueError):
            GenerationParams(**bad)  # type: ignore[arg-type]
