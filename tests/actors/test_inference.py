"""The inference room's actor: streams, finish reasons, usage, errors, cancellation.

Scenarios run the actor in a real actor system on both drivers (trio and the
simulation kernel, with the simulator's inline run-blocking seam), and on trio
with real worker threads, as a node runs it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence

import anyio
import anyio.to_thread
import pytest
import trio

from actors import ActorCrashed, ActorSystem
from actors.attestation import run_inline
from actors.inference import MAX_COALESCED_CHARS, Generate, InferenceActor, Reply
from actors.seams.engine import CancelToken, Chunk, GenerationParams
from protocol.customer_data import CustomerData
from protocol.inference import (
    ChatTurn,
    FinishReason,
    GenerateChunk,
    GenerateDone,
    GenerateRequest,
    Role,
)
from protocol.messages import ErrorCode, ErrorReply
from simulations.engine import TURN_OVERHEAD_TOKENS, ScriptedEngine

MODEL = "scripted-model"
CANARY = "CANARY-inference-5e1f Which river is the longest?"
#: The scripted engine's count for the one-turn prompt: its six words and the
#: turn's overhead.
PROMPT_TOKENS = 6 + TURN_OVERHEAD_TOKENS


def _request(
    max_tokens: int = 8, model: str = MODEL, stop: tuple[str, ...] = ()
) -> GenerateRequest:
    return GenerateRequest(
        model,
        (ChatTurn(Role.USER, CustomerData(CANARY)),),
        max_tokens,
        0.0,
        1.0,
        7,
        tuple(CustomerData(s) for s in stop),
    )


class RecordingEngine(ScriptedEngine):
    """The scripted engine, recording how far it got, where it ran and whether
    it was closed; it fails after ``fail_after`` chunks or stops after ``stop_after``."""

    def __init__(self, *, fail_after: int | None = None, stop_after: int | None = None) -> None:
        super().__init__(MODEL)
        self.fail_after = fail_after
        self.stop_after = stop_after
        self.produced = 0
        self.closed = False
        self.threads: set[int] = set()

    def generate(
        self, messages: Sequence[ChatTurn], params: GenerationParams, cancel: CancelToken
    ) -> Generator[Chunk, None, FinishReason]:
        try:
            for chunk in super().generate(messages, params, cancel):
                self.threads.add(threading.get_ident())
                if self.produced == self.fail_after:
                    raise RuntimeError(CANARY)
                if self.produced == self.stop_after:
                    return FinishReason.STOP
                self.produced += 1
                yield chunk
        except GeneratorExit:
            self.closed = True
            raise
        return FinishReason.LENGTH


def _expected_text(max_tokens: int) -> list[str]:
    chunks = ScriptedEngine(MODEL).generate(
        _request(max_tokens).turns, GenerationParams(max_tokens, 0.0, 1.0, 7), CancelToken()
    )
    return [chunk.text.reveal_text() for chunk in chunks]


def test_a_request_streams_its_chunks_and_ends_with_length_and_usage(run_actors) -> None:
    replies: list[Reply] = []

    async def reply(message: Reply) -> None:
        replies.append(message)

    async def scenario(system: ActorSystem) -> None:
        inference = system.spawn(InferenceActor(RecordingEngine(), run_inline))
        assert await inference.ask(Generate(_request(8), reply), 10.0) is None

    run_actors(scenario)
    *chunks, done = replies
    assert all(isinstance(chunk, GenerateChunk) for chunk in chunks)
    assert [c.text.reveal_text() for c in chunks] == _expected_text(8)  # type: ignore[union-attr]
    assert done == GenerateDone(FinishReason.LENGTH, 8, PROMPT_TOKENS)


def test_an_engine_that_stops_early_ends_with_stop(run_actors) -> None:
    replies: list[Reply] = []

    async def reply(message: Reply) -> None:
        replies.append(message)

    async def scenario(system: ActorSystem) -> None:
        inference = system.spawn(InferenceActor(RecordingEngine(stop_after=3), run_inline))
        await inference.ask(Generate(_request(8), reply), 10.0)

    run_actors(scenario)
    assert [type(r) for r in replies] == [GenerateChunk] * 3 + [GenerateDone]
    assert replies[-1] == GenerateDone(FinishReason.STOP, 3, PROMPT_TOKENS)


@pytest.mark.parametrize(
    ("engine", "model", "code"),
    [
        (None, MODEL, ErrorCode.UNAVAILABLE),
        (RecordingEngine(), "another-model", ErrorCode.BAD_REQUEST),
    ],
)
def test_a_request_the_node_cannot_serve_ends_with_an_error_at_once(
    run_actors, engine: RecordingEngine | None, model: str, code: ErrorCode
) -> None:
    replies: list[Reply] = []

    async def reply(message: Reply) -> None:
        replies.append(message)

    async def scenario(system: ActorSystem) -> None:
        inference = system.spawn(InferenceActor(engine, run_inline))
        await inference.ask(Generate(_request(4, model), reply), 10.0)

    run_actors(scenario)
    assert replies == [ErrorReply(code, False)]
    assert engine is None or engine.produced == 0


def test_an_engine_failure_ends_with_an_internal_error_and_crashes_by_type_only(
    run_actors,
) -> None:
    replies: list[Reply] = []
    engine = RecordingEngine(fail_after=2)

    async def reply(message: Reply) -> None:
        replies.append(message)

    async def scenario(system: ActorSystem) -> ActorCrashed:
        inference = system.spawn(InferenceActor(engine, run_inline))
        with pytest.raises(ActorCrashed) as crashed:
            await inference.ask(Generate(_request(8), reply), 10.0)
        return crashed.value

    crashed = run_actors(scenario)
    assert [type(r) for r in replies] == [GenerateChunk, GenerateChunk, ErrorReply]
    assert replies[-1] == ErrorReply(ErrorCode.INTERNAL, True)
    assert crashed.report.exc_type == "RuntimeError"
    assert CANARY not in repr(crashed.report)


def test_a_requester_that_went_away_stops_generation_within_one_token(run_actors) -> None:
    engine = RecordingEngine()
    sent: list[Reply] = []

    class Gone(Exception):
        pass

    async def reply(message: Reply) -> None:
        if len(sent) == 3:
            raise Gone
        sent.append(message)

    async def scenario(system: ActorSystem) -> ActorCrashed:
        inference = system.spawn(InferenceActor(engine, run_inline))
        with pytest.raises(ActorCrashed) as crashed:
            await inference.ask(Generate(_request(64), reply), 10.0)
        return crashed.value

    crashed = run_actors(scenario)
    # Three chunks delivered, the fourth could not be: no fifth token was made,
    # the engine was closed, and nothing was sent after the failed reply.
    assert [type(r) for r in sent] == [GenerateChunk] * 3
    assert engine.produced == 4
    assert engine.closed
    assert crashed.report.exc_type.endswith("Gone")


def test_cancelling_stops_within_one_token_and_ends_cancelled(run_actors) -> None:
    engine = RecordingEngine()
    replies: list[Reply] = []
    cancel = CancelToken()

    closed_before_done: list[bool] = []

    async def reply(message: Reply) -> None:
        replies.append(message)
        if len(replies) == 2:
            cancel.cancel()  # the requester cancels while the answer streams
        if isinstance(message, GenerateDone):
            closed_before_done.append(engine.closed)

    async def scenario(system: ActorSystem) -> None:
        inference = system.spawn(InferenceActor(engine, run_inline))
        await inference.ask(Generate(_request(64), reply, cancel), 10.0)

    run_actors(scenario)
    assert [type(r) for r in replies] == [GenerateChunk, GenerateChunk, GenerateDone]
    assert replies[-1] == GenerateDone(FinishReason.CANCELLED, 2, PROMPT_TOKENS)
    assert engine.produced == 2
    # The engine's sampling was stopped before the answer ended, not whenever
    # the iterator happens to be collected.
    assert closed_before_done == [True]


def test_on_a_node_the_engine_runs_in_worker_threads_and_replies_on_the_loop() -> None:
    engine = RecordingEngine()
    replies: list[Reply] = []
    reply_threads: set[int] = set()

    async def reply(message: Reply) -> None:
        reply_threads.add(threading.get_ident())
        replies.append(message)

    async def main() -> None:
        await InferenceActor(engine, anyio.to_thread.run_sync).generate(
            Generate(_request(6), reply)
        )

    trio.run(main)
    assert replies[-1] == GenerateDone(FinishReason.LENGTH, 6, PROMPT_TOKENS)
    assert reply_threads == {threading.get_ident()}
    assert engine.threads and threading.get_ident() not in engine.threads


def _answer(replies: list[Reply]) -> str:
    return "".join(r.text.reveal_text() for r in replies if isinstance(r, GenerateChunk))


def test_a_stop_sequence_ends_the_answer_before_it_with_stop(run_actors) -> None:
    full = "".join(_expected_text(8))
    words = full.split(" ")
    # A stop sequence spanning two words: the text before it is sent, none of it.
    stop = words[3][-2:] + " " + words[4][:2]
    replies: list[Reply] = []

    async def reply(message: Reply) -> None:
        replies.append(message)

    async def scenario(system: ActorSystem) -> None:
        inference = system.spawn(InferenceActor(ScriptedEngine(MODEL), run_inline))
        await inference.ask(Generate(_request(8, stop=(stop, "never-generated")), reply), 10.0)

    run_actors(scenario)
    assert _answer(replies) == full[: full.index(stop)]
    assert stop not in _answer(replies)
    # The tokens that made the stop sequence were generated, and are counted.
    assert replies[-1] == GenerateDone(FinishReason.STOP, 5, PROMPT_TOKENS)


def test_a_stop_sequence_in_the_last_allowed_token_ends_stop_not_length(run_actors) -> None:
    words = "".join(_expected_text(8)).split(" ")
    replies: list[Reply] = []

    async def reply(message: Reply) -> None:
        replies.append(message)

    async def scenario(system: ActorSystem) -> None:
        inference = system.spawn(InferenceActor(ScriptedEngine(MODEL), run_inline))
        await inference.ask(Generate(_request(8, stop=(" " + words[7],)), reply), 10.0)

    run_actors(scenario)
    assert _answer(replies) == " ".join(words[:7])
    assert replies[-1] == GenerateDone(FinishReason.STOP, 8, PROMPT_TOKENS)


def test_a_request_cancelled_before_its_first_token_still_reports_its_prompt(
    run_actors,
) -> None:
    replies: list[Reply] = []
    cancel = CancelToken()
    cancel.cancel()

    async def reply(message: Reply) -> None:
        replies.append(message)

    async def scenario(system: ActorSystem) -> None:
        inference = system.spawn(InferenceActor(ScriptedEngine(MODEL), run_inline))
        await inference.ask(Generate(_request(8), reply, cancel), 10.0)

    run_actors(scenario)
    assert replies == [GenerateDone(FinishReason.CANCELLED, 0, PROMPT_TOKENS)]


# -- the engine's loop in one worker thread (as a node runs it) ---------------------------


class GatedEngine(ScriptedEngine):
    """The scripted engine in a worker thread, counting the tokens it made
    (``made``, from the thread), waiting ``pause`` seconds before each and
    failing after ``fail_after``; ``ended`` once its generator finished."""

    def __init__(self, *, pause: float = 0.0, fail_after: int | None = None) -> None:
        super().__init__(MODEL)
        self.pause = pause
        self.fail_after = fail_after
        self.made = 0
        self.ended = False
        self.threads: set[int] = set()

    def generate(
        self, messages: Sequence[ChatTurn], params: GenerationParams, cancel: CancelToken
    ) -> Generator[Chunk, None, FinishReason]:
        inner = super().generate(messages, params, cancel)
        try:
            while True:
                self.threads.add(threading.get_ident())
                if self.pause:
                    time.sleep(self.pause)
                if self.made == self.fail_after:
                    raise RuntimeError(CANARY)
                try:
                    chunk = next(inner)
                except StopIteration as end:
                    return end.value  # type: ignore[no-any-return]
                self.made += chunk.tokens
                yield chunk
        finally:
            # Returned, raised or closed: it makes no more tokens.
            self.ended = True


def _in_thread(engine: ScriptedEngine) -> InferenceActor:
    return InferenceActor(engine, anyio.to_thread.run_sync, engine_loop_in_thread=True)


def test_in_one_thread_the_answer_and_usage_are_those_of_one_step_per_token() -> None:
    engine = GatedEngine()
    replies: list[Reply] = []
    reply_threads: set[int] = set()

    async def reply(message: Reply) -> None:
        reply_threads.add(threading.get_ident())
        replies.append(message)

    trio.run(_in_thread(engine).generate, Generate(_request(24), reply))
    assert _answer(replies) == "".join(_expected_text(24))
    assert replies[-1] == GenerateDone(FinishReason.LENGTH, 24, PROMPT_TOKENS)
    assert sum(r.tokens for r in replies if isinstance(r, GenerateChunk)) == 24
    assert reply_threads == {threading.get_ident()}
    assert engine.threads and threading.get_ident() not in engine.threads
    assert engine.ended


def test_chunks_made_while_a_reply_is_sent_are_coalesced_keeping_text_and_tokens() -> None:
    engine = GatedEngine()
    replies: list[Reply] = []

    async def reply(message: Reply) -> None:
        if not replies:
            # The first reply takes long: the engine runs on meanwhile.
            await trio.to_thread.run_sync(_wait_for, lambda: engine.made >= 40)
        replies.append(message)

    trio.run(_in_thread(engine).generate, Generate(_request(48), reply))
    chunks = [r for r in replies if isinstance(r, GenerateChunk)]
    assert _answer(replies) == "".join(_expected_text(48))
    assert sum(c.tokens for c in chunks) == 48
    assert replies[-1] == GenerateDone(FinishReason.LENGTH, 48, PROMPT_TOKENS)
    # What was made while the first reply was out went as far fewer chunks.
    assert len(chunks) < 48 - 30
    assert max(c.tokens for c in chunks) >= 30


def test_a_stop_sequence_is_exact_when_chunks_are_coalesced() -> None:
    full = "".join(_expected_text(16))
    words = full.split(" ")
    stop = words[9][-2:] + " " + words[10][:2]
    engine = GatedEngine()
    replies: list[Reply] = []

    async def reply(message: Reply) -> None:
        if not replies:
            await trio.to_thread.run_sync(_wait_for, lambda: engine.made >= 8)
        replies.append(message)

    trio.run(_in_thread(engine).generate, Generate(_request(16, stop=(stop,)), reply))
    assert _answer(replies) == full[: full.index(stop)]
    assert replies[-1] == GenerateDone(FinishReason.STOP, 11, PROMPT_TOKENS)


def test_a_coalesced_chunk_stays_within_its_bound_and_the_engine_waits_for_it() -> None:
    class Wordy(ScriptedEngine):
        """Chunks of 5000 characters: four of them pass the bound."""

        def generate(
            self, messages: Sequence[ChatTurn], params: GenerationParams, cancel: CancelToken
        ) -> Generator[Chunk, None, FinishReason]:
            for i in range(params.max_tokens):
                if cancel.cancelled:
                    return FinishReason.CANCELLED
                yield Chunk(CustomerData(chr(ord("a") + i % 26) * 5000), 1)
            return FinishReason.LENGTH

    replies: list[Reply] = []
    released = trio.Event()

    async def reply(message: Reply) -> None:
        if not replies:
            await released.wait()
        replies.append(message)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_in_thread(Wordy(MODEL)).generate, Generate(_request(20), reply))
            await trio.sleep(0.5)  # the engine fills what may wait, then waits
            released.set()

    trio.run(main)
    chunks = [r for r in replies if isinstance(r, GenerateChunk)]
    assert all(len(c.text) <= MAX_COALESCED_CHARS for c in chunks)
    assert _answer(replies) == "".join(chr(ord("a") + i % 26) * 5000 for i in range(20))
    assert replies[-1] == GenerateDone(FinishReason.LENGTH, 20, PROMPT_TOKENS)


def test_in_one_thread_cancelling_stops_within_one_token_and_ends_cancelled() -> None:
    engine = GatedEngine(pause=0.01)
    cancel = CancelToken()
    replies: list[Reply] = []
    made_at_cancel: list[int] = []
    ended_before_done: list[bool] = []

    async def reply(message: Reply) -> None:
        replies.append(message)
        if len(replies) == 3:
            made_at_cancel.append(engine.made)
            cancel.cancel()
        if isinstance(message, GenerateDone):
            ended_before_done.append(engine.ended)

    started = time.monotonic()
    trio.run(_in_thread(engine).generate, Generate(_request(500), reply, cancel))
    assert time.monotonic() - started < 4.0  # not the 5 s of 500 tokens
    done = replies[-1]
    assert isinstance(done, GenerateDone)
    assert done.finish_reason is FinishReason.CANCELLED
    # At most the token in progress when the cancel came was finished after it.
    assert engine.made <= made_at_cancel[0] + 1
    assert done.completion_tokens == engine.made
    assert ended_before_done == [True]


def test_in_one_thread_a_requester_that_went_away_stops_generation_within_one_token() -> None:
    engine = GatedEngine(pause=0.01)
    sent: list[Reply] = []
    made_at_failure: list[int] = []

    class Gone(Exception):
        pass

    async def reply(message: Reply) -> None:
        if len(sent) == 3:
            made_at_failure.append(engine.made)
            raise Gone
        sent.append(message)

    with pytest.raises(Gone):
        trio.run(_in_thread(engine).generate, Generate(_request(500), reply))
    assert [type(r) for r in sent] == [GenerateChunk] * 3
    assert engine.made <= made_at_failure[0] + 1
    assert engine.ended


def test_in_one_thread_an_engine_failure_ends_with_an_internal_error_raised_by_type() -> None:
    engine = GatedEngine(fail_after=5)
    replies: list[Reply] = []

    async def reply(message: Reply) -> None:
        replies.append(message)

    with pytest.raises(RuntimeError) as raised:
        trio.run(_in_thread(engine).generate, Generate(_request(8), reply))
    assert type(raised.value) is RuntimeError  # not wrapped in a group
    assert _answer(replies) == "".join(_expected_text(8)[:5])
    assert replies[-1] == ErrorReply(ErrorCode.INTERNAL, True)
    assert engine.ended


def test_in_one_thread_a_cancelled_caller_stops_the_engine_within_one_token() -> None:
    engine = GatedEngine(pause=0.01)
    replies: list[Reply] = []

    async def reply(message: Reply) -> None:
        replies.append(message)

    async def main() -> None:
        with trio.move_on_after(0.1):
            await _in_thread(engine).generate(Generate(_request(500), reply))

    trio.run(main)
    made = engine.made
    assert engine.ended and made < 500
    time.sleep(0.05)
    assert engine.made == made  # the thread ended with the caller
    assert not any(isinstance(r, GenerateDone) for r in replies)


def test_in_one_thread_a_request_cancelled_before_its_first_token_reports_its_prompt() -> None:
    replies: list[Reply] = []
    cancel = CancelToken()
    cancel.cancel()

    async def reply(message: Reply) -> None:
        replies.append(message)

    trio.run(_in_thread(GatedEngine()).generate, Generate(_request(8), reply, cancel))
    assert replies == [GenerateDone(FinishReason.CANCELLED, 0, PROMPT_TOKENS)]


def test_in_one_thread_customer_data_stays_wrapped() -> None:
    replies: list[Reply] = []

    async def reply(message: Reply) -> None:
        replies.append(message)

    trio.run(_in_thread(GatedEngine()).generate, Generate(_request(8), reply))
    assert all(isinstance(r.text, CustomerData) for r in replies if isinstance(r, GenerateChunk))
    assert CANARY not in repr(replies)


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Block (in a worker thread) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the engine did not get there")
        time.sleep(0.001)
