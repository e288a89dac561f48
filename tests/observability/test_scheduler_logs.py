"""Nothing the scheduler path handles reaches a log line or a crash report
(invariant I2): a simulated cluster runs requests whose prompt is a canary
through an engine that fails with the canary in its exception text, a node
lost mid-stream and a scheduler restarted under its supervisor, and every
line the logging pipeline wrote is searched."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

from _scheduler_cluster import CANARY, Cluster, CountingEngine, request

from actors.log import configure_logging
from actors.seams.engine import CancelToken, Chunk, GenerationParams
from protocol.inference import ChatTurn
from protocol.messages import ErrorCode, ErrorReply
from simulations.checkers import crash_reports_clean


class FailingEngine(CountingEngine):
    """Fails after two chunks, quoting the prompt in its exception."""

    def generate(
        self, messages: Sequence[ChatTurn], params: GenerationParams, cancel: CancelToken
    ) -> Iterator[Chunk]:
        for index, chunk in enumerate(super().generate(messages, params, cancel)):
            if index == 2:
                raise RuntimeError(messages[0].content.reveal_text())
            yield chunk


def test_the_scheduler_path_logs_no_customer_data() -> None:
    out = io.StringIO()
    configure_logging(out, level="debug")
    cluster = Cluster(
        ("inf-1", "inf-2"), step=0.05, supervised=True, engines={"inf-1": FailingEngine()}
    )

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        failing = cluster.read(await cluster.submit(request(8)))  # on inf-1
        lost = cluster.read(await cluster.submit(request(40, 2)))  # on inf-2
        await cluster.wait_ended(failing)
        assert failing[-1] == ErrorReply(ErrorCode.INTERNAL, True)
        await cluster.wait_for(lambda: len(lost) >= 2)
        cluster.partition("inf-2")
        await cluster.wait_ended(lost)
        cluster.network.heal()
        scheduler = cluster.ingress.whereis("scheduler")
        assert scheduler is not None
        cluster.ingress.kill(scheduler)
        await cluster.wait_for(lambda: cluster.serving() == 2)

    cluster.run(main)
    assert any("RuntimeError" in report.exc_type for report in cluster.crashes)
    assert crash_reports_clean(cluster.crashes, [CANARY]).ok
    text = out.getvalue()
    assert "actor_crashed" in text and "child_restarting" in text  # the paths ran
    assert CANARY not in text
    assert cluster.check().ok
