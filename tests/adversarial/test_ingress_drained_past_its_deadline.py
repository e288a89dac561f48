"""Attack: the operator drains the ingress (SIGTERM) while a customer's answer
streams for longer than the drain deadline.

Invariant I7: every admitted request ends with its answer or an explicit
error. At the drain deadline the daemon used to cancel its listeners first
and stop its actors after, so a stream still running was cut mid-body: the
client saw a broken connection (``APIConnectionError``), not an error event,
and could not tell a drained node from a lost network. Now the actor tree
stops while the listeners still run: the scheduler ends each open request
with an error, which the ingress writes as the stream's last event, and only
then do the listeners close.

A real cluster (scripted engine): a 20 s stream, the ingress drained after
its first chunks (the dev cluster's drain deadline is 5 s). The stream ends
with an explicit error from the ingress, and the ingress exits 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests._scripted_cluster import (
    EXIT_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    ScriptedCluster,
    scripted_cluster,
)

#: Some 20 s at the scripted pace: longer than the drain deadline.
TOKENS = 400


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedCluster]:
    data_dir: Path = tmp_path_factory.mktemp("drained-ingress")
    with scripted_cluster(data_dir, inference_nodes=1) as cluster:
        yield cluster


def test_a_stream_past_the_drain_deadline_ends_with_an_error_event(
    running: ScriptedCluster,
) -> None:
    thread, outcome = running.stream(TOKENS)
    assert outcome.first_chunk.wait(REQUEST_TIMEOUT_S)
    assert outcome.error is None
    ingress = running.terminate("ingress-1")
    thread.join(REQUEST_TIMEOUT_S)
    assert outcome.ended.is_set()
    assert outcome.finish_reason is None and 0 < outcome.chunks < TOKENS
    error = outcome.error
    assert isinstance(error, openai.APIError)
    # The ingress said so, rather than the connection breaking off.
    assert not isinstance(error, openai.APIConnectionError), "the stream was cut, not ended"
    assert ingress.wait(EXIT_TIMEOUT_S) == 0
