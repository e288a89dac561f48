"""Invariant checkers run over a finished simulation.

Each checker returns the list of violated rules (empty when it holds). They
state the invariants as executable checks; a failing run prints its seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actors import ActorSystem, CrashReport
from actors.scheduler import SealedRecord
from protocol.inference import GenerateChunk, GenerateDone
from protocol.messages import ErrorReply

if TYPE_CHECKING:
    # Only for annotations: the network imports the kernel, whose workload
    # imports this module, so a runtime import here is a cycle whenever the
    # network is imported first.
    from simulations.network import NetworkStats

_TERMINAL = (GenerateDone, ErrorReply)


def _is_terminal(reply: object) -> bool:
    return isinstance(reply, _TERMINAL) or (isinstance(reply, SealedRecord) and reply.final)


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    violations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


def every_request_ends(
    taken: int, finished: int, asks_issued: int, ask_outcomes: dict[str, int]
) -> CheckResult:
    """I7: every operation a client started finished, and every ask ended in
    exactly one outcome (a reply or an explicit error)."""
    violations = []
    if taken != finished:
        violations.append(f"{taken - finished} operations never finished")
    ended = sum(ask_outcomes.values())
    if ended != asks_issued:
        violations.append(f"{asks_issued} asks issued but {ended} ended")
    return CheckResult("every_request_ends", tuple(violations))


def crash_reports_clean(reports: Iterable[CrashReport], canaries: Sequence[str]) -> CheckResult:
    """I2: no crash report carries message contents or exception text."""
    violations = []
    for report in reports:
        text = f"{report.actor}|{report.exc_type}|{report.location}|{report.function}"
        for canary in canaries:
            if canary in text:
                violations.append(f"crash report of {report.actor} contains a canary")
    return CheckResult("crash_reports_clean", tuple(violations))


def supervision_restored(
    systems: Sequence[ActorSystem], names_by_node: Mapping[str, Sequence[str]]
) -> CheckResult:
    """After the run settles, every permanent child is alive again under its
    supervisor: injected crashes never left a hole in a tree."""
    violations = []
    for system in systems:
        for name in names_by_node.get(system.node, ()):
            if system.whereis(name) is None:
                violations.append(f"{system.node}/{name} is not running")
    return CheckResult("supervision_restored", tuple(violations))


def frames_conserved(stats: NetworkStats) -> CheckResult:
    """Every frame copy put on the wire was delivered, lost or cut, exactly once."""
    on_wire = stats.sent + stats.duplicated
    accounted = stats.delivered + stats.lost + stats.cut
    if on_wire != accounted:
        return CheckResult(
            "frames_conserved", (f"{on_wire} frame copies sent, {accounted} accounted for",)
        )
    return CheckResult("frames_conserved", ())


def replies_match(mismatched: int) -> CheckResult:
    """Every successful ask got the reply to its own request."""
    if mismatched:
        return CheckResult("replies_match", (f"{mismatched} asks got another request's reply",))
    return CheckResult("replies_match", ())


def every_submission_ends(admitted: int, streams: Sequence[Sequence[object]]) -> CheckResult:
    """I7 at the scheduler: each of the ``admitted`` submissions was read to
    its end, and its stream holds chunks then exactly one terminal reply
    (``GenerateDone`` or ``ErrorReply``; for a sealed request, sealed
    records then the final one or an ``ErrorReply``), last. A stream read after
    ``aclose`` may be cut short (its reader went away); pass only streams
    whose reader stayed."""
    violations = []
    if len(streams) != admitted:
        violations.append(f"{admitted} submissions admitted but {len(streams)} streams read")
    for index, stream in enumerate(streams):
        terminals = [i for i, reply in enumerate(stream) if _is_terminal(reply)]
        if not terminals:
            violations.append(f"submission {index} never ended")
        elif terminals != [len(stream) - 1]:
            violations.append(f"submission {index} has a terminal reply before its end")
        if any(
            not isinstance(reply, (GenerateChunk, SealedRecord, *_TERMINAL)) for reply in stream
        ):
            violations.append(f"submission {index} carried something other than a reply")
    return CheckResult("every_submission_ends", tuple(violations))
