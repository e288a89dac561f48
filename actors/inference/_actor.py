"""The inference actor: generation requests on the Engine seam, each ending with
``GenerateDone`` or an ``ErrorReply``."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from actors import Actor, Context
from actors.attestation import RunBlocking
from actors.seams.engine import CancelToken, Chunk, Engine, GenerationParams
from protocol.inference import FinishReason, GenerateChunk, GenerateDone, GenerateRequest
from protocol.messages import ErrorCode, ErrorReply

_T = TypeVar("_T")

#: What the actor sends for a request: chunks, then exactly one of the other two.
Reply: TypeAlias = GenerateChunk | GenerateDone | ErrorReply
#: Sends one reply to whoever asked (a channel, a node link). It raises only
#: when the requester can no longer be answered.
ReplySink: TypeAlias = Callable[[Reply], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Generate:
    """Serve ``request``, sending each reply through ``reply``.

    A local command, never on the wire (it carries a callable and a token):
    whoever received the request over a channel or a link hands it in.
    ``cancel`` may be set from any thread or task; generation then stops
    within one token and the request ends with ``GenerateDone(cancelled)``.
    """

    request: GenerateRequest
    reply: ReplySink
    cancel: CancelToken = field(default_factory=CancelToken)


class InferenceActor(Actor):
    """Generation on one loaded model (the Engine seam).

    ``engine`` is the model this node loaded from weights it decrypted in
    memory, or ``None`` on a node that holds none (it answers every request
    ``UNAVAILABLE``). ``run_blocking`` runs the engine's blocking steps in a
    worker thread (``anyio.to_thread.run_sync`` on a node;
    :func:`actors.attestation.run_inline` in the simulator); it must wait for
    the step it started even when cancelled (both do), since the engine's
    iterator is closed afterwards and cannot be while a thread runs it.

    The actor keeps no state between requests, so a channel adapter may also
    run :meth:`generate` directly for each connection
    (:func:`actors.inference.serve_inference`).
    """

    def __init__(self, engine: Engine | None, run_blocking: RunBlocking) -> None:
        self._engine = engine
        self._run_blocking = run_blocking

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Generate):
            await self.generate(message)
        return None

    async def generate(self, command: Generate) -> None:
        """Answer ``command.request``: any number of chunks, then exactly one
        ``GenerateDone`` or ``ErrorReply`` (invariant I7).

        An engine failure is answered ``ErrorReply(INTERNAL, retryable)`` and
        then raised on, for whoever runs the actor to report by type and
        location (``serve_secure``, or the runtime's crash report); the error
        carries a code only. A failing ``reply`` means the requester is gone:
        generation stops within one token, nothing more is sent, and the
        sink's error is raised on.
        """
        request, reply = command.request, command.reply
        engine = self._engine
        if engine is None or request.model != engine.model_id:
            code = ErrorCode.UNAVAILABLE if engine is None else ErrorCode.BAD_REQUEST
            await reply(ErrorReply(code, False))
            return
        params = GenerationParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=request.stop,
        )
        prompt_tokens = await self._engine_step(
            functools.partial(engine.count_prompt_tokens, request.turns), reply
        )
        start = functools.partial(engine.generate, request.turns, params, command.cancel)
        chunks: Generator[Chunk, None, FinishReason] | None = None
        produced = 0
        ended: FinishReason | None = None
        try:
            # The engine's steps are blocking CPU work: each runs in the
            # worker thread, one token per hop, and each chunk is sent from
            # here, so a requester that went away stops generation at the
            # next token (its reply raises, and nothing is left to answer).
            chunks = await self._engine_step(start, reply)
            step = functools.partial(_next_chunk, chunks)
            while not command.cancel.cancelled:
                chunk = await self._engine_step(step, reply)
                if not isinstance(chunk, Chunk):
                    ended = chunk
                    break
                produced += chunk.tokens
                if len(chunk.text):
                    await reply(GenerateChunk(chunk.text, chunk.tokens))
        finally:
            if chunks is not None:
                # Stops the engine's sampling now, whatever ended the loop.
                chunks.close()
        if command.cancel.cancelled:
            reason = FinishReason.CANCELLED
        elif isinstance(ended, FinishReason) and ended is not FinishReason.CANCELLED:
            reason = ended
        else:
            # An engine that said nothing: it ran out of text, unless it made
            # every token it was allowed.
            reason = FinishReason.LENGTH if produced >= request.max_tokens else FinishReason.STOP
        await reply(GenerateDone(reason, produced, prompt_tokens))

    async def _engine_step(self, step: Callable[[], _T], reply: ReplySink) -> _T:
        """``step`` in the worker thread; if the engine fails, the request ends
        with ``ErrorReply(INTERNAL, retryable)`` and the failure is raised on."""
        try:
            return await self._run_blocking(step)
        except Exception:
            # I7: an accepted request ends with an answer or an explicit
            # error. The error carries a code only; the exception (whose text
            # may quote the prompt) is reported by type and location by
            # whoever runs the actor.
            await reply(ErrorReply(ErrorCode.INTERNAL, True))
            raise


def _next_chunk(chunks: Generator[Chunk, None, FinishReason]) -> Chunk | FinishReason | None:
    """The engine's next chunk, or, once it ended, the reason it returned."""
    try:
        return next(chunks)
    except StopIteration as end:
        value = end.value
    # Outside the handler: nothing of the generator's frame rides along.
    return value if isinstance(value, FinishReason) else None
