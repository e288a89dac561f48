"""The scheduler's dispatcher end to end on trio, in one process: the real
scheduler, worker (engine steps in worker threads, as a node runs them),
membership and inference actors in one actor system, as the ingress's HTTP
layer would drive them."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import anyio.to_thread
import pytest
import trio

from actors import ActorSystem, open_actor_system
from actors.inference import InferenceActor, InferenceWorker, SchedulerMembership
from actors.scheduler import (
    ModelListing,
    NoCapacity,
    Overloaded,
    SchedulerDispatcher,
    SchedulerLimits,
    UnknownModel,
)
from actors.seams.engine import CancelToken, Chunk, GenerationParams
from nodes.clock import TrioClock
from nodes.random import SystemRandom
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
from simulations.engine import ScriptedEngine

MODEL = "scripted-model"
CANARY = "CANARY-dispatch-90ab What is the tallest tree?"


def _request(max_tokens: int, model: str = MODEL) -> GenerateRequest:
    return GenerateRequest(
        model, (ChatTurn(Role.USER, CustomerData(CANARY)),), max_tokens, 0.0, 1.0, 3
    )


#: The prompt's tokens as the scripted engine counts them (reported in ``GenerateDone``).
PROMPT_TOKENS = ScriptedEngine(MODEL).count_prompt_tokens(_request(1).turns)


class SlowEngine(ScriptedEngine):
    """The scripted engine taking ``delay`` seconds per token in its thread."""

    def __init__(self, delay: float) -> None:
        super().__init__(MODEL)
        self.delay = delay
        self.produced = 0

    def generate(
        self, messages: Sequence[ChatTurn], params: GenerationParams, cancel: CancelToken
    ) -> Iterator[Chunk]:
        for chunk in super().generate(messages, params, cancel):
            time.sleep(self.delay)
            self.produced += 1
            yield chunk


def _wire(
    system: ActorSystem, engine: ScriptedEngine, limits: SchedulerLimits
) -> SchedulerDispatcher:
    dispatcher = SchedulerDispatcher(system, limits=limits, known_models=[MODEL], end_grace=0.5)
    dispatcher.spawn()
    inference = InferenceActor(engine, anyio.to_thread.run_sync)
    system.spawn(InferenceWorker(inference, slots=1), name="inference")
    system.spawn(SchedulerMembership(system.ref(system.node, "scheduler"), model=MODEL, slots=1))
    return dispatcher


async def _serving(dispatcher: SchedulerDispatcher) -> None:
    with trio.fail_after(5):
        while list(dispatcher.models()) != [ModelListing(MODEL, 1)]:
            await trio.sleep(0.01)


def test_submit_streams_to_the_end_and_refuses_at_once_on_trio() -> None:
    engine = SlowEngine(0.01)
    limits = SchedulerLimits(max_queued=1, max_queued_per_tenant=1, heartbeat_interval=0.2)
    clock = TrioClock()

    async def main() -> None:
        async with open_actor_system(
            "ingress", random=SystemRandom(), clock=clock, shutdown_timeout=1.0
        ) as system:
            dispatcher = _wire(system, engine, limits)
            with pytest.raises(UnknownModel):
                await dispatcher.submit(
                    _request(2, "other"), tenant="t", deadline=clock.monotonic() + 5
                )
            await _serving(dispatcher)

            # One runs to its end.
            first = await dispatcher.submit(
                _request(6), tenant="t", deadline=clock.monotonic() + 10
            )
            replies = [reply async for reply in first]
            *chunks, done = replies
            expected = ScriptedEngine(MODEL).generate(
                _request(6).turns, GenerationParams(6, 0.0, 1.0, 3), CancelToken()
            )
            assert [c.text.reveal_text() for c in chunks] == [  # type: ignore[union-attr]
                c.text.reveal_text() for c in expected
            ]
            assert done == GenerateDone(FinishReason.LENGTH, 6, PROMPT_TOKENS)

            # One runs, one waits, the next is refused at once.
            running = await dispatcher.submit(
                _request(200), tenant="t", deadline=clock.monotonic() + 10
            )
            waiting = await dispatcher.submit(
                _request(2), tenant="t", deadline=clock.monotonic() + 10
            )
            started = trio.current_time()
            with pytest.raises(Overloaded):
                await dispatcher.submit(_request(2), tenant="t", deadline=clock.monotonic() + 10)
            assert trio.current_time() - started < 1.0

            # The client of the running one goes away: the node stops it, and
            # the waiting one gets the slot and completes.
            async for reply in running:
                assert isinstance(reply, GenerateChunk)
                break
            await running.aclose()
            last = [r async for r in waiting][-1]
            assert last == GenerateDone(FinishReason.LENGTH, 2, PROMPT_TOKENS)
            assert engine.produced < 100
            assert dispatcher.stats.cancelled == 1

    trio.run(main)


def test_a_submission_ends_by_itself_when_its_scheduler_is_gone() -> None:
    engine = SlowEngine(0.05)
    limits = SchedulerLimits(heartbeat_interval=0.2)
    clock = TrioClock()

    async def main() -> None:
        async with open_actor_system(
            "ingress", random=SystemRandom(), clock=clock, shutdown_timeout=1.0
        ) as system:
            dispatcher = _wire(system, engine, limits)
            await _serving(dispatcher)
            submission = await dispatcher.submit(
                _request(200), tenant="t", deadline=clock.monotonic() + 0.3
            )
            scheduler = system.whereis("scheduler")
            assert scheduler is not None
            system.kill(scheduler)  # no stopping hook, no deadline timer any more
            with trio.fail_after(5):
                replies = [reply async for reply in submission]
            assert replies[-1] == ErrorReply(ErrorCode.DEADLINE_EXCEEDED, False)
            with pytest.raises(NoCapacity):
                await dispatcher.submit(_request(2), tenant="t", deadline=clock.monotonic() + 1)

    trio.run(main)
