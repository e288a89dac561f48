"""Attack: the operator drains an inference node (SIGTERM, what any restart or
scale-down sends) while it streams a customer's answer.

Draining promises that in-flight work gets ``drain_deadline_s`` to finish. An
inference node used to leave the scheduler first, and a leave makes the
scheduler end every request the node was running (those that streamed end
``UNAVAILABLE``): each SIGTERM cut the answers in progress short at once. Now
the node's worker takes no new placement and reports no free slot while what
it runs finishes; only then does the node leave and stop.

A real cluster (scripted engine, two inference nodes of one slot each): two
streams, one on each node; one node is drained mid-stream. Both streams end
with their whole answer, the drained node exits 0, and the cluster keeps
serving on the other node.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._scripted_cluster import (
    EXIT_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    ScriptedCluster,
    scripted_cluster,
)

#: Some 2.5 s per answer at the scripted pace: well within the dev cluster's
#: drain deadline (5 s), far longer than the drain took to cut it.
TOKENS = 50


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedCluster]:
    data_dir: Path = tmp_path_factory.mktemp("drained-inference")
    with scripted_cluster(data_dir, inference_nodes=2) as cluster:
        yield cluster


def test_a_drained_inference_node_finishes_the_answers_it_streams(
    running: ScriptedCluster,
) -> None:
    streams = [running.stream(TOKENS) for _ in range(2)]
    for _thread, outcome in streams:
        # One slot per node: both nodes now stream one answer each.
        assert outcome.first_chunk.wait(REQUEST_TIMEOUT_S)
        assert outcome.error is None
    drained = running.terminate("inference-1")
    for thread, outcome in streams:
        thread.join(REQUEST_TIMEOUT_S)
        assert outcome.ended.is_set()
        assert outcome.error is None, f"a stream was cut: {type(outcome.error).__name__}"
        assert (outcome.finish_reason, outcome.chunks) == ("length", TOKENS)
    assert drained.wait(EXIT_TIMEOUT_S) == 0
    # The other node serves what comes next.
    after = running.client().chat.completions.create(
        model=running.model, messages=[{"role": "user", "content": "again"}], max_tokens=3
    )
    assert after.choices[0].finish_reason == "length"
