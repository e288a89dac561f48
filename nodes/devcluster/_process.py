"""Supervising the node processes of a dev cluster: start, watch, stop.

Each node is a child process in a process group of its own, so a Ctrl-C at
the terminal reaches only the dev cluster, which then stops the nodes in
reverse start order (SIGTERM, and SIGKILL for any still running after the
grace period). On Linux a child is also asked to be killed if the dev
cluster's process dies without stopping it (``PR_SET_PDEATHSIG``), so a
killed dev cluster leaves no nodes behind. Children are started from the
main thread (that is the thread the death signal follows) with an argument
vector, never a shell; their stdout and stderr go to the node's log file.

Waiting is polling (every :data:`POLL_INTERVAL_S`): simple, and a node that
exits while the cluster waits for something else is noticed within one poll.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import anyio

from nodes.devcluster._errors import DevClusterCheck, DevClusterError, NodeExited

POLL_INTERVAL_S: Final = 0.1
_PR_SET_PDEATHSIG: Final = 1

T = TypeVar("T")


def _death_signal_setter() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when its parent
    thread dies (Linux); ``None`` elsewhere. libc is looked up here, in the
    parent, so the child runs a single foreign call between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    kill = int(signal.SIGKILL)

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)

    return set_death_signal


@dataclass
class NodeProcess:
    """One started node: its name, its process and where its output goes."""

    name: str
    #: The node's own log (named in errors), and where its stdout and stderr go.
    log_path: Path
    console_path: Path
    process: subprocess.Popen[bytes]

    @property
    def logs(self) -> str:
        return f"log: {self.log_path}, console: {self.console_path}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def returncode(self) -> int | None:
        """The exit status once the process ended (negative: killed by that signal)."""
        return self.process.poll()

    def exited_error(self) -> NodeExited:
        status = self.returncode()
        return NodeExited(
            self.name, self.log_path, -1 if status is None else status, logs=self.logs
        )


class ProcessSupervisor:
    """The dev cluster's children, in start order (module docstring)."""

    def __init__(self, *, grace_s: float) -> None:
        if grace_s <= 0:
            raise ValueError("the stop grace period must be positive")
        self.grace_s = grace_s
        self.nodes: list[NodeProcess] = []
        self._death_signal = _death_signal_setter()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        console_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> NodeProcess:
        """Start ``argv`` (no shell) as node ``name``, its stdout and stderr
        appended to ``console_path``; ``log_path`` is the log it writes itself."""
        console_path.parent.mkdir(parents=True, exist_ok=True)
        with console_path.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 -- an argument vector we built, no shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                close_fds=True,
                process_group=0,
                preexec_fn=self._death_signal,
            )
        node = NodeProcess(name, log_path, console_path, process)
        self.nodes.append(node)
        return node

    def first_exited(self) -> NodeProcess | None:
        """The first child (in start order) that has exited, if any."""
        for node in self.nodes:
            if node.returncode() is not None:
                return node
        return None

    async def wait_for_exit(self) -> NodeProcess:
        """Return the first child to exit, whenever that is."""
        while True:
            exited = self.first_exited()
            if exited is not None:
                return exited
            await anyio.sleep(POLL_INTERVAL_S)

    async def wait_until(
        self,
        ready: Callable[[], T | None],
        *,
        deadline: float,
        waiting_for: NodeProcess,
        what: str,
    ) -> T:
        """Poll ``ready`` until it returns a value; raise :class:`NodeExited` as
        soon as any child exits, and a timeout naming ``waiting_for`` at
        ``deadline`` (anyio's clock)."""
        while True:
            exited = self.first_exited()
            if exited is not None:
                raise exited.exited_error()
            value = ready()
            if value is not None:
                return value
            if anyio.current_time() >= deadline:
                raise DevClusterError(
                    DevClusterCheck.STARTUP_TIMEOUT,
                    f"{waiting_for.name} did not {what} in time ({waiting_for.logs})",
                    node=waiting_for.name,
                    log_path=waiting_for.log_path,
                )
            await anyio.sleep(POLL_INTERVAL_S)

    async def stop(self) -> None:
        """SIGTERM every running child (newest first), SIGKILL what still runs
        after the grace period, and reap them all. Safe to call twice."""
        for node in reversed(self.nodes):
            if node.returncode() is None:
                _signal(node, signal.SIGTERM)
        deadline = anyio.current_time() + self.grace_s
        while any(node.returncode() is None for node in self.nodes):
            if anyio.current_time() >= deadline:
                break
            await anyio.sleep(POLL_INTERVAL_S)
        for node in self.nodes:
            if node.returncode() is None:
                _signal(node, signal.SIGKILL)
        for node in self.nodes:
            # SIGKILL cannot be refused: this returns at once.
            node.process.wait()


def _signal(node: NodeProcess, signum: signal.Signals) -> None:
    # Popen.send_signal does nothing once the child was reaped, so a reused
    # process id is never signalled.
    with contextlib.suppress(ProcessLookupError):
        node.process.send_signal(signum)
