"""The ``mantle-node`` command line: an argparse dispatcher over subcommand groups.

Each group lives in its own module listed in :data:`SUBCOMMAND_MODULES` and
exposes ``register(subparsers) -> None``; a command sets ``handler`` (a
function of the parsed arguments returning the exit status) as its default.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

#: Subcommand modules, imported in this order (an explicit list, not discovery).
SUBCOMMAND_MODULES: tuple[str, ...] = ("nodes._cli_release", "nodes._cli_model")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mantle-node",
        description="Mantle node and operator tooling: releases, transparency log, models.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A group shipped in an optional part of the tree may be absent;
            # any other import failure (a broken dependency) is a real error.
            if exc.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    status: int = handler(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
