"""The scheduler in the simulator: one ingress node (the real scheduler behind
its dispatcher) and inference nodes (the real worker, membership and
inference actors on the scripted engine) over the simulated network.

Each scenario ends with the ``every_submission_ends`` checker (I7)."""

from __future__ import annotations

import pytest
from _scheduler_cluster import (
    CANARY,
    MODEL,
    Cluster,
    Fixed,
    LinkProfile,
    expected_text,
    prompt_tokens,
    request,
    text_of,
)

from actors.scheduler import (
    AdmissionError,
    ModelListing,
    NoCapacity,
    Overloaded,
    SchedulerLimits,
    UnknownModel,
)
from protocol.inference import FinishReason, GenerateChunk, GenerateDone, GenerateRequest
from protocol.messages import ErrorCode, ErrorReply
from simulations.checkers import crash_reports_clean


def test_requests_complete_across_the_nodes() -> None:
    cluster = Cluster(("inf-1", "inf-2"))
    requests = [request(5, seed) for seed in range(6)]

    async def main() -> list[list[object]]:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        assert list(cluster.dispatcher.models()) == [ModelListing(MODEL, 2)]
        streams = [cluster.read(await cluster.submit(r)) for r in requests]
        await cluster.wait_ended(*streams)
        return streams  # type: ignore[return-value]

    streams = cluster.run(main)
    for req, stream in zip(requests, streams, strict=True):
        assert stream[-1] == GenerateDone(FinishReason.LENGTH, 5, prompt_tokens(req))
        assert text_of(stream) == expected_text(req)  # type: ignore[arg-type]
    assert all(node.engine.served >= 2 for node in cluster.nodes.values())
    assert cluster.check().ok, cluster.check()


def test_unknown_model_and_no_capacity_are_refused_at_once() -> None:
    cluster = Cluster(("inf-1",))

    async def main() -> None:
        other = GenerateRequest("no-such-model", request().turns, 4, 0.0, 1.0, 1)
        with pytest.raises(UnknownModel):
            await cluster.submit(other)
        # Known (from the release) but no node has joined yet.
        with pytest.raises(NoCapacity):
            await cluster.submit(request())
        assert cluster.now() == 0.0
        await cluster.wait_for(lambda: cluster.serving() == 1)
        stream = cluster.read(await cluster.submit(request()))
        await cluster.wait_ended(stream)
        assert isinstance(stream[-1], GenerateDone)

    cluster.run(main)
    assert cluster.check().ok


@pytest.mark.parametrize("loss", ["partition", "worker_killed", "membership_killed"])
def test_a_node_lost_before_streaming_retries_the_request_elsewhere(loss: str) -> None:
    # inf-1 is chosen first (ties go by name) and is slow to start.
    cluster = Cluster(("inf-1", "inf-2"), step={"inf-1": 2.0, "inf-2": 0.01})
    first = cluster.nodes["inf-1"]
    req = request(6)

    async def main() -> list[object]:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        stream = cluster.read(await cluster.submit(req))
        await cluster.wait_for(lambda: first.engine.served == 0 and cluster.now() > 0.6)
        assert cluster.dispatcher.stats.placements == 1
        if loss == "partition":
            cluster.partition("inf-1")
        elif loss == "worker_killed":
            first.system.kill(first.worker)
        else:
            first.system.kill(first.membership)
        await cluster.wait_ended(stream)
        return stream  # type: ignore[return-value]

    stream = cluster.run(main)
    assert stream[-1] == GenerateDone(FinishReason.LENGTH, 6, prompt_tokens(req))
    assert text_of(stream) == expected_text(req)  # type: ignore[arg-type]
    assert cluster.nodes["inf-2"].engine.served == 1
    assert cluster.dispatcher.stats.retries == 1
    assert cluster.check().ok


def test_a_node_lost_mid_stream_ends_the_request_with_an_explicit_error() -> None:
    cluster = Cluster(("inf-1", "inf-2"), step=0.05)
    req = request(60)

    async def main() -> list[object]:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        stream = cluster.read(await cluster.submit(req))
        await cluster.wait_for(lambda: len(stream) >= 3)
        cluster.partition("inf-1")
        await cluster.wait_ended(stream)
        return stream  # type: ignore[return-value]

    stream = cluster.run(main)
    *chunks, end = stream
    assert end == ErrorReply(ErrorCode.UNAVAILABLE, False)
    assert len(chunks) >= 3 and all(isinstance(c, GenerateChunk) for c in chunks)
    assert expected_text(req).startswith(text_of(chunks))  # type: ignore[arg-type]
    assert cluster.nodes["inf-2"].engine.served == 0  # not replayed elsewhere
    assert cluster.check().ok


def test_a_full_queue_answers_overloaded_at_once_and_per_tenant() -> None:
    limits = SchedulerLimits(max_queued=3, max_queued_per_tenant=2, heartbeat_interval=0.5)
    cluster = Cluster(("inf-1",), step=0.05, limits=limits)

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        streams = [cluster.read(await cluster.submit(request(10)))]  # runs
        streams += [cluster.read(await cluster.submit(request(2))) for _ in range(2)]  # wait
        started = cluster.now()
        with pytest.raises(Overloaded) as tenant_full:
            await cluster.submit(request(2))
        assert tenant_full.value.retry_after > 0
        # Another tenant still gets in, until the model's queue is full.
        streams.append(cluster.read(await cluster.submit(request(2), tenant="tenant-b")))
        with pytest.raises(Overloaded):
            await cluster.submit(request(2), tenant="tenant-b")
        assert cluster.now() == started  # refused at once: no time passed
        await cluster.wait_ended(*streams)
        assert all(isinstance(s[-1], GenerateDone) for s in streams)

    cluster.run(main)
    assert cluster.dispatcher.stats.refused == 2
    assert cluster.check().ok


def test_one_tenants_burst_does_not_starve_another() -> None:
    limits = SchedulerLimits(max_queued=16, max_queued_per_tenant=8, heartbeat_interval=0.5)
    cluster = Cluster(("inf-1",), step=0.01, limits=limits)

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        streams = []
        for n in range(6):
            streams.append(cluster.read(await cluster.submit(request(10)), f"a{n}"))
        for n in range(2):
            sub = await cluster.submit(request(10), tenant="tenant-b")
            streams.append(cluster.read(sub, f"b{n}"))
        started = cluster.now()
        await cluster.wait_ended(*streams)
        # Each freed slot is filled when its attempt ends, not at the next
        # heartbeat (0.5 s): eight requests of ~0.12 s each take 1 s of
        # virtual time (waiting for heartbeats took 1.5 s).
        assert cluster.now() - started < 1.25

    cluster.run(main)
    # a0 was placed before anything queued; then the two tenants alternate.
    assert cluster.finished == ["a0", "a1", "b0", "a2", "b1", "a3", "a4", "a5"]
    assert cluster.check().ok


def test_deadlines_end_queued_and_running_requests() -> None:
    cluster = Cluster(("inf-1",), step=0.1)
    node = cluster.nodes["inf-1"]

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        t0 = cluster.now()
        running = cluster.read(await cluster.submit(request(30), within=1.0))
        queued = cluster.read(await cluster.submit(request(4), within=0.5))
        await cluster.wait_ended(queued)
        assert queued == [ErrorReply(ErrorCode.DEADLINE_EXCEEDED, False)]
        assert 0.5 <= cluster.now() - t0 < 0.6
        await cluster.wait_ended(running)
        assert running[-1] == ErrorReply(ErrorCode.DEADLINE_EXCEEDED, False)
        assert 1.0 <= cluster.now() - t0 < 1.1
        # The node was told: generation stopped, its slot is free again.
        await cluster.wait_for(lambda: node.engine.produced < 30 and cluster.now() - t0 > 1.3)
        assert (await node.load()).free_slots == 1
        later = cluster.read(await cluster.submit(request(3)))
        await cluster.wait_ended(later)
        assert isinstance(later[-1], GenerateDone)

    cluster.run(main)
    assert node.engine.produced < 30 + 3
    assert cluster.dispatcher.stats.expired == 2
    assert cluster.check().ok


def test_cancellation_reaches_the_node_and_a_queued_request_leaves_its_queue() -> None:
    cluster = Cluster(("inf-1",), step=0.05)
    node = cluster.nodes["inf-1"]

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        running = await cluster.submit(request(100))
        queued = await cluster.submit(request(4))
        seen: list[object] = []
        async for reply in running:
            seen.append(reply)
            if len(seen) == 3:
                break
        await queued.aclose()  # queued: taken off the queue
        produced_at_close = node.engine.produced
        await running.aclose()
        await running.aclose()  # idempotent
        assert [r async for r in running] == []
        await cluster.wait_for(lambda: cluster.now() > 1.0)
        # Stopped within one token of the cancel arriving (one token ~ 50 ms).
        assert node.engine.produced <= produced_at_close + 1
        assert (await node.load()).free_slots == 1
        assert cluster.dispatcher.stats.placements == 1  # the queued one never ran
        later = cluster.read(await cluster.submit(request(3)))
        await cluster.wait_ended(later)
        assert isinstance(later[-1], GenerateDone)

    cluster.run(main)
    assert cluster.dispatcher.stats.cancelled == 2
    assert cluster.check(closed=2).ok


def test_a_node_whose_link_drops_gets_no_work_until_it_rejoins() -> None:
    cluster = Cluster(("inf-1", "inf-2"), step=0.01)
    cut, kept = cluster.nodes["inf-1"], cluster.nodes["inf-2"]

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        cluster.partition("inf-1")
        # The link's loss is detected (as a failed re-attestation closes it):
        # the node leaves the registry at once.
        await cluster.wait_for(lambda: cluster.serving() == 1, timeout=0.5)
        streams = [cluster.read(await cluster.submit(request(3, n))) for n in range(4)]
        await cluster.wait_ended(*streams)
        assert cut.engine.served == 0 and kept.engine.served == 4
        cluster.network.heal()
        await cluster.wait_for(lambda: cluster.serving() == 2)
        streams = [cluster.read(await cluster.submit(request(20, n))) for n in range(2)]
        await cluster.wait_ended(*streams)
        assert cut.engine.served == 1

    cluster.run(main)
    assert cluster.check().ok


def test_a_silent_node_is_dropped_after_three_heartbeats_and_rejoins() -> None:
    cluster = Cluster(("inf-1", "inf-2"))
    silent = LinkProfile(latency=Fixed(0.002), loss=1.0)

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        cluster.network.set_profile("inf-1", "ingress", silent)
        t0 = cluster.now()
        await cluster.wait_for(lambda: cluster.serving() == 1)
        # Three intervals of 0.5 s, checked every interval: dropped within 2 s.
        assert 1.5 <= cluster.now() - t0 <= 2.1
        assert cluster.network.is_connected("inf-1", "ingress")  # the link never dropped
        cluster.network.set_profile("inf-1", "ingress", LinkProfile(latency=Fixed(0.002)))
        await cluster.wait_for(lambda: cluster.serving() == 2)

    cluster.run(main)
    assert cluster.dispatcher.stats.nodes_lost == 1
    assert cluster.check().ok


def test_a_worker_refuses_work_beyond_its_slots_and_the_request_waits() -> None:
    # The node announces two slots but its worker has one: the scheduler's
    # view is wrong, and the worker's refusal (not a hang, not a failure)
    # puts the request back in the queue.
    cluster = Cluster(("inf-1",), slots=1, step=0.02, announced=2)

    async def main() -> list[list[object]]:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        streams = [cluster.read(await cluster.submit(request(4, n))) for n in range(3)]
        await cluster.wait_ended(*streams)
        return streams  # type: ignore[return-value]

    streams = cluster.run(main)
    assert all(
        s[-1] == GenerateDone(FinishReason.LENGTH, 4, prompt_tokens(request(4, n)))
        for n, s in enumerate(streams)
    )
    stats = cluster.dispatcher.stats
    assert stats.placements > 3  # some placements were refused and placed again
    assert stats.retries == 0 and stats.failed == 0
    assert cluster.nodes["inf-1"].engine.served == 3
    assert cluster.check().ok


def test_a_restarted_scheduler_ends_what_it_admitted_and_the_nodes_rejoin() -> None:
    cluster = Cluster(("inf-1", "inf-2"), step=0.05, supervised=True)

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        streams = [cluster.read(await cluster.submit(request(40, n))) for n in range(3)]
        await cluster.wait_for(lambda: len(streams[0]) >= 2)
        scheduler = cluster.ingress.whereis("scheduler")
        assert scheduler is not None
        cluster.ingress.kill(scheduler)  # no stopping hook: the next one cleans up
        await cluster.wait_ended(*streams, timeout=1.0)
        assert streams[0][-1] == ErrorReply(ErrorCode.UNAVAILABLE, False)  # it had streamed
        assert streams[2] == [ErrorReply(ErrorCode.UNAVAILABLE, True)]  # it was queued
        # The nodes saw the old scheduler go (Down): they stopped what it had
        # placed and joined the new one.
        await cluster.wait_for(lambda: cluster.serving() == 2)
        later = cluster.read(await cluster.submit(request(3)))
        await cluster.wait_ended(later)
        assert isinstance(later[-1], GenerateDone)
        await cluster.wait_for(lambda: cluster.now() > 5.0)

    cluster.run(main)
    # Two attempts of 40 tokens were cut short, and one of 3 ran.
    assert sum(node.engine.produced for node in cluster.nodes.values()) < 40
    assert cluster.check().ok


def test_chaos_every_submission_ends() -> None:
    """Crashes, partitions and lossy links: whatever happens, every admitted
    request ends exactly once, and retries never duplicate output."""
    profile = LinkProfile(latency=Fixed(0.002), loss=0.01, duplicate=0.05, reorder=0.02)
    limits = SchedulerLimits(max_queued=64, max_queued_per_tenant=32, heartbeat_interval=0.25)
    cluster = Cluster(("inf-1", "inf-2", "inf-3"), step=0.02, limits=limits, profile=profile)
    requests = [request(3 + n % 7, n) for n in range(40)]

    refused: list[int] = []

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 3)
        streams = []
        for n, req in enumerate(requests):
            if n == 10:
                cluster.partition("inf-2")
            if n in (15, 30):
                node = cluster.nodes["inf-1"]
                victim = node.membership if n == 15 else node.worker
                node.system.kill(victim)
                await node.system.wait_terminated(victim, 1.0)
                if n == 15:
                    node.start_membership()
                else:
                    node.start_worker()
            if n == 20:
                node = cluster.nodes["inf-3"]
                node.system.kill(node.worker)
                await node.system.wait_terminated(node.worker, 1.0)
                node.start_worker()
            if n == 25:
                cluster.network.heal()
            tenant = "tenant-a" if n % 3 else "tenant-b"
            try:
                submission = await cluster.submit(req, tenant=tenant, within=20.0)
            except AdmissionError:
                refused.append(n)  # every node lost at once: refused, at once
            else:
                streams.append((req, cluster.read(submission)))
            await cluster.clock.sleep(0.03)
        await cluster.wait_ended(*(stream for _, stream in streams), timeout=60.0)
        for req, stream in streams:
            if isinstance(stream[-1], GenerateDone):
                assert text_of(stream) == expected_text(req)

    cluster.run(main)
    result = cluster.check()
    assert result.ok, result.violations
    assert crash_reports_clean(cluster.crashes, [CANARY]).ok
    stats = cluster.dispatcher.stats
    assert stats.ended == stats.admitted == len(requests) - len(refused)
    assert stats.completed >= len(requests) // 2
