"""The command-line convention shared by Mantle's three command lines.

A public module of the client package on purpose: the client installs without
any server code, so the operators' and the simulator's command lines build on
the client's convention, never the other way round.

``mantle`` (client), ``mantle-node`` (operators) and ``mantle-sim``
(simulator) are each an argparse dispatcher over subcommand groups. A group
lives in its own module, listed explicitly by its command line (no plugin
discovery: what a command can do is visible in one tuple), and exposes
``register(subparsers) -> None``; every command sets ``handler`` (a function
of the parsed arguments returning the exit status) as its default.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence


def build_parser(prog: str, description: str, modules: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in modules:
        importlib.import_module(module_name).register(subparsers)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen command; usage and status 2 without one."""
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    status: int = handler(args)
    return status
