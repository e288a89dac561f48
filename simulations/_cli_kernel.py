"""``mantle-sim kernel``: run the built-in actor workload on the simulation kernel."""

from __future__ import annotations

import argparse
import io
import sys

from actors.log import configure_logging
from mantle.commands import IntegerIn
from simulations.kernel import KernelConfig, run_kernel_workload

# Bounds for a run that finishes on a laptop; the kernel's own rule (at least
# as many actors as nodes) is checked by KernelConfig.
_MAX_NODES = 256
_MAX_ACTORS = 100_000
_MAX_MESSAGES = 10_000_000


def _run(args: argparse.Namespace) -> int:
    # Crashes, restarts and supervisors giving up are the point of this
    # workload and are counted in the summary; their log lines (JSON, with
    # wall-clock timestamps) go to standard error only when asked for.
    configure_logging(sys.stderr if args.log else io.StringIO(), level="info")
    try:
        config = KernelConfig(
            seed=args.seed, nodes=args.nodes, actors=args.actors, messages=args.messages
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = run_kernel_workload(config)
    print(result.summary())
    if not result.ok:
        print(
            f"invariant violated; reproduce with: mantle-sim kernel --seed {args.seed} "
            f"--nodes {args.nodes} --actors {args.actors} --messages {args.messages}",
            file=sys.stderr,
        )
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``kernel`` command to ``mantle-sim``."""
    kernel = subparsers.add_parser(
        "kernel",
        help="run the built-in actor workload on the deterministic simulation kernel",
        description="Actors on several simulated nodes tell and ask each other under "
        "supervision, with loss, duplication, reordering, a partition that heals and "
        "injected actor crashes. Prints a summary and the run's trace hash.",
    )
    kernel.add_argument(
        "--seed", type=IntegerIn(0, (1 << 64) - 1), required=True, help="the run's seed"
    )
    kernel.add_argument(
        "--nodes", type=IntegerIn(1, _MAX_NODES), default=5, help="simulated nodes (5)"
    )
    kernel.add_argument(
        "--actors", type=IntegerIn(1, _MAX_ACTORS), default=50, help="worker actors (50)"
    )
    kernel.add_argument(
        "--messages",
        type=IntegerIn(1, _MAX_MESSAGES),
        default=20000,
        help="client operations (20000)",
    )
    kernel.add_argument(
        "--log", action="store_true", help="write the runtime's log lines to standard error"
    )
    kernel.set_defaults(handler=_run)
