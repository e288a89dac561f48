"""``mantle-node run --config node.toml``: run one node (see :mod:`nodes.daemon`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _run(args: argparse.Namespace) -> int:
    # Imported here: the other mantle-node commands need none of the daemon.
    from nodes.daemon import run_node

    return run_node(Path(args.config))


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a node: measured boot, its roles, drain on SIGTERM",
        description="Run one Mantle node from its node.toml. Exit status: 0 after a clean"
        " drain, 2 configuration error, 3 boot refused, 1 any other failure.",
    )
    parser.add_argument("--config", required=True, help="the node's node.toml")
    parser.set_defaults(handler=_run)
