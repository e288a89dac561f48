"""Attack: an inference node (joined honestly, then misbehaving: a patched
engine, a model that never stops) streams chunks without end for a request
that allowed a few tokens, to grow the ingress's memory without bound — the
scheduler passes chunks into the submission, which holds them until the
HTTP side reads them, and a non-streaming answer collects them all.

The scheduler takes at most ``max_tokens`` tokens, and ``max_tokens + 1``
chunks (a final flush may carry none), for an attempt; the first chunk
beyond either ends the request with an explicit error (I7) and cancels the
attempt on the node.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from _scheduler_cluster import Cluster, CountingEngine, request

from actors.seams.engine import CancelToken, Chunk, GenerationParams
from protocol.customer_data import CustomerData
from protocol.inference import ChatTurn, GenerateChunk
from protocol.messages import ErrorCode, ErrorReply


class EndlessEngine(CountingEngine):
    """Yields chunks until cancelled, whatever ``max_tokens`` says;
    ``tokens_per_chunk`` 0 claims the chunks cost nothing."""

    def __init__(self, tokens_per_chunk: int) -> None:
        super().__init__()
        self.tokens_per_chunk = tokens_per_chunk

    def generate(
        self, messages: Sequence[ChatTurn], params: GenerationParams, cancel: CancelToken
    ) -> Iterator[Chunk]:
        self.served += 1
        while not cancel.cancelled and self.produced < 100_000:
            self.produced += 1
            yield Chunk(text=CustomerData("more "), tokens=self.tokens_per_chunk)


def _flood(tokens_per_chunk: int) -> tuple[list[object], EndlessEngine]:
    engine = EndlessEngine(tokens_per_chunk)
    cluster = Cluster(("inf-1",), step=0.001, engines={"inf-1": engine})
    req = request(max_tokens=4)

    async def main() -> list[object]:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        stream = cluster.read(await cluster.submit(req))
        await cluster.wait_ended(stream, timeout=20)
        await cluster.clock.sleep(1.0)  # the cancel reaches the node
        return stream  # type: ignore[return-value]

    stream = cluster.run(main)
    assert cluster.check().ok
    return stream, engine


def test_a_node_streaming_past_max_tokens_is_cut_off() -> None:
    stream, engine = _flood(tokens_per_chunk=1)
    *chunks, end = stream
    assert end == ErrorReply(ErrorCode.UNAVAILABLE, False)
    assert all(isinstance(c, GenerateChunk) for c in chunks)
    assert len(chunks) <= 4
    assert engine.produced < 1_000, "the attempt was cancelled on the node"


def test_chunks_claiming_no_tokens_are_cut_off_too() -> None:
    stream, engine = _flood(tokens_per_chunk=0)
    *chunks, end = stream
    assert end == ErrorReply(ErrorCode.UNAVAILABLE, False)
    assert len(chunks) <= 5
    assert engine.produced < 1_000
