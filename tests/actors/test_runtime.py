"""The local runtime: asks and their timeouts, the mailbox bound, monitors,
links, the name registry, lifecycle hooks, and crash reports that never
carry message contents or exception text."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from actors import (
    NORMAL,
    Actor,
    ActorCrashed,
    ActorStopped,
    ActorSystem,
    AskTimeout,
    Context,
    Down,
    Exit,
    ExitKind,
    ExitReason,
    MailboxFull,
    NameTaken,
    NoSuchActor,
)
from actors.log import configure_logging

CANARY = "CANARY-5c1e-prompt-text"


class Echo(Actor):
    async def receive(self, ctx: Context, message: object) -> object:
        return message


class Sleeper(Actor):
    """Replies after sleeping the requested number of seconds (Clock seam)."""

    async def receive(self, ctx: Context, message: object) -> object:
        assert isinstance(message, float)
        await ctx.clock.sleep(message)
        return "awake"


class Gate(Actor):
    """Holds its handler on a waiter until the test opens it."""

    def __init__(self, gate: Any, seen: list[object]):
        self.gate = gate
        self.seen = seen

    async def receive(self, ctx: Context, message: object) -> object:
        self.seen.append(message)
        if message == "hold":
            await self.gate.wait(None)
        return message


class Watcher(Actor):
    trap_exit = True

    def __init__(self, inbox: list[object]):
        self.inbox = inbox

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, (Down, Exit)):
            self.inbox.append(message)
            return None
        verb, ref = message  # type: ignore[misc]
        if verb == "monitor":
            return ctx.monitor(ref)
        if verb == "link":
            ctx.link(ref)
        if verb == "demonitor":
            ctx.demonitor(ref)
        return None


class Leaker(Actor):
    """Fails with the message's contents in the exception text."""

    async def receive(self, ctx: Context, message: object) -> object:
        raise ValueError(f"could not handle {message!r}")


class Hooks(Actor):
    def __init__(self, log: list[object]):
        self.log = log

    async def started(self, ctx: Context) -> None:
        self.log.append("started")

    async def receive(self, ctx: Context, message: object) -> object:
        self.log.append(message)
        if message == "quit":
            ctx.stop(NORMAL)
        return None

    async def stopping(self, ctx: Context, reason: ExitReason) -> None:
        self.log.append(("stopping", reason.kind))


def test_ask_replies_and_times_out(run_actors) -> None:
    async def scenario(system: ActorSystem) -> None:
        sleeper = system.spawn(Sleeper())
        assert await sleeper.ask(0.0, 1.0) == "awake"
        started = system.clock.monotonic()
        with pytest.raises(AskTimeout):
            await sleeper.ask(0.3, 0.05)
        assert 0.05 <= system.clock.monotonic() - started < 2.0
        # The late reply is dropped and counted, and the actor keeps serving.
        # (Polled rather than slept for: on a loaded machine the sleeper's
        # wake-up and ours can land in one scheduler batch, in either order.)
        deadline = system.clock.monotonic() + 10.0
        while system.stats.late_replies == 0 and system.clock.monotonic() < deadline:
            await system.clock.sleep(0.05)
        assert system.stats.late_replies == 1
        assert await sleeper.ask(0.0, 1.0) == "awake"
        assert system._pending == {}

    run_actors(scenario)


def test_ask_to_dead_or_unknown_actor(run_actors) -> None:
    async def scenario(system: ActorSystem) -> None:
        with pytest.raises(NoSuchActor):
            await system.ref("t", "nobody").ask("x", 1.0)
        echo = system.spawn(Echo())
        system.stop(echo)
        assert await system.wait_terminated(echo, 1.0)
        with pytest.raises(NoSuchActor):
            await echo.ask("x", 1.0)
        with pytest.raises(NoSuchActor):
            echo.tell("x")

    run_actors(scenario)


def test_mailbox_bound(run_actors) -> None:
    seen: list[object] = []

    async def scenario(system: ActorSystem) -> None:
        gate = system.driver.new_waiter()
        gated = system.spawn(Gate(gate, seen), mailbox=2)
        gated.tell("hold")
        await system.clock.sleep(0.01)
        assert seen == ["hold"]  # taken out of the mailbox, handler parked
        gated.tell(1)
        gated.tell(2)
        # At the bound: tell and ask are refused at once, nothing is enqueued.
        with pytest.raises(MailboxFull):
            gated.tell(3)
        with pytest.raises(MailboxFull):
            await gated.ask(4, 1.0)
        # System signals bypass the bound: a monitor still fires.
        watcher_inbox: list[object] = []
        watcher = system.spawn(Watcher(watcher_inbox))
        await watcher.ask(("monitor", gated), 1.0)
        # send() waits for room (backpressure) instead of failing.
        sent: list[int] = []

        async def sender() -> None:
            await gated.send(5)
            sent.append(5)

        system.spawn(_Runner(sender))
        await system.clock.sleep(0.01)
        assert sent == []
        gate.wake()
        await system.clock.sleep(0.01)
        assert sent == [5]
        await system.clock.sleep(0.01)
        assert seen == ["hold", 1, 2, 5]
        system.kill(gated)
        await system.clock.sleep(0.01)
        assert [type(m) for m in watcher_inbox] == [Down]

    run_actors(scenario)


class _Runner(Actor):
    """Runs one coroutine function in an actor's context, then stops."""

    def __init__(self, fn: Any):
        self.fn = fn

    async def started(self, ctx: Context) -> None:
        await self.fn()
        ctx.stop()


def test_queued_asks_fail_when_the_actor_stops(run_actors) -> None:
    async def scenario(system: ActorSystem) -> None:
        sleeper = system.spawn(Sleeper())
        results: list[object] = []

        async def ask() -> None:
            try:
                results.append(await sleeper.ask(0.5, 5.0))
            except ActorStopped:
                results.append("stopped")

        for _ in range(3):
            system.spawn(_Runner(ask))
        await system.clock.sleep(0.01)
        system.stop(sleeper)
        await system.clock.sleep(1.0)
        # The one in progress finishes; the queued ones end explicitly. (trio
        # may resume the three askers in any order.)
        assert sorted(results) == ["awake", "stopped", "stopped"]

    run_actors(scenario)


def test_monitors(run_actors) -> None:
    inbox: list[object] = []

    async def scenario(system: ActorSystem) -> None:
        watcher = system.spawn(Watcher(inbox))
        leaker = system.spawn(Leaker())
        echo = system.spawn(Echo())
        m1 = await watcher.ask(("monitor", leaker), 1.0)
        m2 = await watcher.ask(("monitor", echo), 1.0)
        m3 = await watcher.ask(("monitor", system.ref("t", "ghost")), 1.0)
        m4 = await watcher.ask(("monitor", echo), 1.0)
        await watcher.ask(("demonitor", m4), 1.0)
        with pytest.raises(ActorCrashed):
            await leaker.ask("x", 1.0)
        system.stop(echo)
        await system.clock.sleep(0.01)
        downs = [m for m in inbox if isinstance(m, Down)]
        assert [(d.monitor, d.reason.kind) for d in downs] == [
            (m3, ExitKind.NOPROC),
            (m1, ExitKind.CRASHED),
            (m2, ExitKind.SHUTDOWN),
        ]

    run_actors(scenario)


def test_links(run_actors) -> None:
    inbox: list[object] = []

    async def scenario(system: ActorSystem) -> None:
        trapper = system.spawn(Watcher(inbox))
        plain = system.spawn(Sleeper())
        leaker = system.spawn(Leaker())
        await trapper.ask(("link", leaker), 1.0)
        await trapper.ask(("link", plain), 1.0)
        # A non-trapping linked actor dies with its partner's abnormal reason,
        # even mid-handler; a trapping one gets Exit messages instead.
        system._link(system._cells[plain.actor_id], leaker)
        pending = system.spawn(_Runner(lambda: plain.ask(10.0, 20.0)))
        await system.clock.sleep(0.01)
        with pytest.raises(ActorCrashed):
            await leaker.ask("x", 1.0)
        await system.clock.sleep(0.01)
        assert not system.is_alive(plain)
        assert system.is_alive(trapper)
        exits = [(m.ref, m.reason.kind) for m in inbox if isinstance(m, Exit)]
        assert exits == [(leaker, ExitKind.CRASHED), (plain, ExitKind.CRASHED)]
        assert not system.is_alive(pending)  # its ask ended (ActorStopped) and it crashed
        # A normal exit does not take a non-trapping partner down.
        echo = system.spawn(Echo())
        hooks_log: list[object] = []
        hooks = system.spawn(Hooks(hooks_log))
        system._link(system._cells[echo.actor_id], hooks)
        hooks.tell("quit")
        await system.clock.sleep(0.01)
        assert system.is_alive(echo) and not system.is_alive(hooks)

    run_actors(scenario)


def test_registry(run_actors) -> None:
    async def scenario(system: ActorSystem) -> None:
        first = system.spawn(Echo(), name="svc")
        with pytest.raises(NameTaken):
            system.spawn(Echo(), name="svc")
        assert system.whereis("svc") == first
        by_name = system.ref("t", "svc")
        assert await by_name.ask("hi", 1.0) == "hi"
        system.stop(first)
        await system.wait_terminated(first, 1.0)
        assert system.whereis("svc") is None
        second = system.spawn(Echo(), name="svc")
        # A name-addressed ref reaches whoever holds the name now.
        assert await by_name.ask("again", 1.0) == "again"
        assert second != first

    run_actors(scenario)


def test_lifecycle_hooks(run_actors) -> None:
    log: list[object] = []

    async def scenario(system: ActorSystem) -> None:
        ref = system.spawn(Hooks(log))
        ref.tell("one")
        ref.tell("quit")
        ref.tell("never")
        assert await system.wait_terminated(ref, 1.0)
        assert log == ["started", "one", "quit", ("stopping", ExitKind.NORMAL)]

    run_actors(scenario)


def test_crash_report_never_carries_message_or_exception_text(run_actors) -> None:
    stream = io.StringIO()
    configure_logging(stream, level="debug")
    reports: list[object] = []
    inbox: list[object] = []

    async def scenario(system: ActorSystem) -> None:
        system._on_crash = reports.append
        watcher = system.spawn(Watcher(inbox))
        leaker = system.spawn(Leaker(), name="leaker")
        await watcher.ask(("monitor", leaker), 1.0)
        with pytest.raises(ActorCrashed) as caught:
            await leaker.ask({"prompt": CANARY}, 1.0)
        await system.clock.sleep(0.01)
        error = caught.value
        assert CANARY not in str(error) and CANARY not in repr(error)
        assert error.__cause__ is None and error.__context__ is None
        report = error.report
        assert report.actor == "t/leaker#2"
        assert report.exc_type == "ValueError"
        assert report.location.startswith("test_runtime.py:")
        assert report.function == "receive"
        down = inbox[0]
        assert isinstance(down, Down) and down.reason.crash == report

    try:
        run_actors(scenario)
    finally:
        configure_logging(io.StringIO())
    output = stream.getvalue()
    assert CANARY not in output and CANARY not in repr(reports)
    events = [json.loads(line) for line in output.splitlines()]
    crash = next(e for e in events if e["event"] == "actor_crashed")
    assert crash["error_type"] == "ValueError"
    assert crash["error_location"].startswith("test_runtime.py:")
