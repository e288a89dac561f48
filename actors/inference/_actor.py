"""The inference actor: generation requests on the Engine seam, each ending with
``GenerateDone`` or an ``ErrorReply``."""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Final, TypeAlias, TypeVar

import trio

from actors import Actor, Context
from actors.attestation import RunBlocking
from actors.seams.engine import CancelToken, Chunk, Engine, GenerationParams
from protocol.customer_data import CustomerData
from protocol.inference import FinishReason, GenerateChunk, GenerateDone, GenerateRequest
from protocol.messages import ErrorCode, ErrorReply

_T = TypeVar("_T")

#: What the actor sends for a request: chunks, then exactly one of the other two.
Reply: TypeAlias = GenerateChunk | GenerateDone | ErrorReply
#: Sends one reply to whoever asked (a channel, a node link). It raises only
#: when the requester can no longer be answered.
ReplySink: TypeAlias = Callable[[Reply], Awaitable[None]]

#: The most text one coalesced chunk carries (the wire allows 64 Ki
#: characters): past it the engine's thread waits until the event loop took
#: what is waiting, so a requester that does not read holds bounded memory.
MAX_COALESCED_CHARS: Final = 16 * 1024


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

    With ``engine_loop_in_thread`` (a node: trio, and ``run_blocking`` a
    real worker thread) each generation runs in *one* blocking call: the
    engine's loop turns in the worker thread and hands its chunks to the
    event loop through a :class:`_ChunkHandoff` as they come, instead of one
    thread hop per token. The engine never waits for a chunk to be sent, and
    chunks it makes while the event loop has not yet taken the previous ones
    are coalesced into one (text joined, tokens added; at most
    :data:`MAX_COALESCED_CHARS`), so every per-chunk cost downstream (the
    node link, the scheduler, the ingress, the client) is paid once per
    batch when it cannot keep up. Without it (the simulator and tests), each
    engine step is one ``run_blocking`` call, so a simulated engine's steps
    take the simulated time its seam gives them.

    The actor keeps no state between requests, so a channel adapter may also
    run :meth:`generate` directly for each connection
    (:func:`actors.inference.serve_inference`).
    """

    def __init__(
        self,
        engine: Engine | None,
        run_blocking: RunBlocking,
        *,
        engine_loop_in_thread: bool = False,
    ) -> None:
        self._engine = engine
        self._run_blocking = run_blocking
        self._engine_loop_in_thread = engine_loop_in_thread

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
        if self._engine_loop_in_thread:
            await self._generate_in_thread(engine, command, params)
            return
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
        await reply(_done(command, ended, produced, prompt_tokens))

    async def _generate_in_thread(
        self, engine: Engine, command: Generate, params: GenerationParams
    ) -> None:
        """:meth:`generate` with the engine's whole loop in one worker thread
        (see the class docstring): the same replies, cancellation within one
        token, and every request ended (I7)."""
        request, reply = command.request, command.reply
        handoff = _ChunkHandoff(trio.lowlevel.current_trio_token())
        # The engine stops within one token when the request is cancelled or,
        # through this token alone, when the requester is gone.
        stop = CancelToken(parent=command.cancel)
        loop = functools.partial(_engine_loop, engine, request, params, stop, handoff)
        produced = 0
        end: _Finished | _Failed | None = None
        gone: Exception | None = None

        async def run_loop() -> None:
            try:
                await self._run_blocking(loop)
            except Exception as error:
                # The seam itself failed (the loop never raises): answered as
                # an engine failure.
                handoff.end(_Failed(error))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_loop)
            try:
                while end is None:
                    batch, end = await handoff.take()
                    if batch is None:
                        continue
                    produced += batch.tokens
                    if len(batch.text):
                        await reply(GenerateChunk(batch.text, batch.tokens))
            except Exception as error:
                # The requester cannot be answered: nothing more is sent, and
                # the error is raised on once the engine stopped.
                gone = error
            finally:
                # Whatever ended the wait (the answer's end, a failed reply,
                # cancellation of this task), the engine stops at its next
                # token and a thread waiting to hand over returns.
                stop.cancel()
                handoff.close()
        if gone is not None:
            raise gone
        if isinstance(end, _Failed):
            # I7, as in _engine_step: a code only; the exception is reported
            # by type and location by whoever runs the actor.
            await reply(ErrorReply(ErrorCode.INTERNAL, True))
            raise end.error
        assert end is not None
        await reply(_done(command, end.reason, produced, end.prompt_tokens))

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


def _done(
    command: Generate, ended: FinishReason | None, produced: int, prompt_tokens: int
) -> GenerateDone:
    """The answer's end: why it ended and its usage."""
    if command.cancel.cancelled:
        reason = FinishReason.CANCELLED
    elif isinstance(ended, FinishReason) and ended is not FinishReason.CANCELLED:
        reason = ended
    else:
        # An engine that said nothing: it ran out of text, unless it made
        # every token it was allowed.
        max_tokens = command.request.max_tokens
        reason = FinishReason.LENGTH if produced >= max_tokens else FinishReason.STOP
    return GenerateDone(reason, produced, prompt_tokens)


@dataclass(frozen=True, slots=True)
class _Finished:
    """The engine's loop ended: why (``None`` if the engine did not say)."""

    reason: FinishReason | None
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class _Failed:
    """The engine raised ``error`` (its text may quote the prompt: it is
    raised on, never rendered)."""

    error: Exception


def _engine_loop(
    engine: Engine,
    request: GenerateRequest,
    params: GenerationParams,
    stop: CancelToken,
    handoff: _ChunkHandoff,
) -> None:
    """A whole generation, in the worker thread: the prompt counted, every
    chunk handed over as it comes, then the end (after the engine's iterator
    was closed, so its sampling stopped before the answer ends). Never raises:
    an engine failure is handed over too."""
    end: _Finished | _Failed
    chunks: Generator[Chunk, None, FinishReason] | None = None
    try:
        prompt_tokens = engine.count_prompt_tokens(request.turns)
        chunks = engine.generate(request.turns, params, stop)
        reason: FinishReason | None = None
        while not stop.cancelled:
            item = _next_chunk(chunks)
            if not isinstance(item, Chunk):
                reason = item
                break
            if not handoff.put(item):
                break  # nobody takes chunks any more
        end = _Finished(reason, prompt_tokens)
    except Exception as error:
        end = _Failed(error)
    finally:
        if chunks is not None:
            chunks.close()
    handoff.end(end)


class _ChunkHandoff:
    """Chunks from the engine's worker thread to the event loop's task.

    At most one batch waits: a chunk made while the loop has not taken the
    previous ones joins it (text joined, tokens added), and the loop is woken
    once per batch (``TrioToken.run_sync_soon``, which never blocks the
    engine). A batch of :data:`MAX_COALESCED_CHARS` makes the engine's thread
    wait until the loop took it, or stopped taking (:meth:`close`).
    """

    __slots__ = ("_chars", "_chunks", "_closed", "_cond", "_end", "_event", "_token", "_woken")

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._cond = threading.Condition(threading.Lock())
        self._chunks: list[Chunk] = []
        self._chars = 0
        self._end: _Finished | _Failed | None = None
        self._closed = False
        self._woken = False  # a wake-up is on its way to the loop
        self._event = trio.Event()

    # -- the engine's thread

    def put(self, chunk: Chunk) -> bool:
        """Hand ``chunk`` over; ``False`` once the loop stopped taking."""
        size = len(chunk.text)
        with self._cond:
            while self._chunks and self._chars + size > MAX_COALESCED_CHARS and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._chunks.append(chunk)
            self._chars += size
            wake = not self._woken
            self._woken = True
        if wake:
            self._token.run_sync_soon(self._wake)
        return True

    def end(self, end: _Finished | _Failed) -> None:
        """The last hand-over: how the loop ended."""
        with self._cond:
            self._end = end
            wake = not self._woken and not self._closed
            self._woken = True
        if wake:
            self._token.run_sync_soon(self._wake)

    # -- the event loop

    def _wake(self) -> None:
        self._event.set()

    async def take(self) -> tuple[Chunk | None, _Finished | _Failed | None]:
        """What waits once there is something: the chunks as one (or
        ``None``), and the end if the loop ended."""
        await self._event.wait()
        # A new event before taking: a chunk handed over after this take
        # wakes the next one.
        self._event = trio.Event()
        with self._cond:
            chunks, self._chunks = self._chunks, []
            self._chars = 0
            self._woken = False
            end = self._end
            self._cond.notify_all()
        return _coalesced(chunks), end

    def close(self) -> None:
        """Nothing more is taken: a waiting or later :meth:`put` returns ``False``."""
        with self._cond:
            self._closed = True
            self._chunks = []
            self._cond.notify_all()


def _coalesced(chunks: list[Chunk]) -> Chunk | None:
    """``chunks`` as one: their text in order, their tokens added."""
    if len(chunks) <= 1:
        return chunks[0] if chunks else None
    text = "".join(chunk.text.reveal_text() for chunk in chunks)
    return Chunk(CustomerData(text), sum(chunk.tokens for chunk in chunks))
