"""The ``mantle-sim`` command line: an argparse dispatcher over subcommand groups.

Each group lives in its own module listed in :data:`SUBCOMMAND_MODULES` and
exposes ``register(subparsers) -> None``; a command sets ``handler`` (a
function of the parsed arguments returning the exit status) as its default.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

#: Subcommand modules, imported in this order (an explicit list, not discovery).
SUBCOMMAND_MODULES: tuple[str, ...] = ("simulations._cli_kernel", "simulations._cli_tpm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mantle-sim",
        description="Mantle's deterministic simulator: one seed reproduces a whole run.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
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
