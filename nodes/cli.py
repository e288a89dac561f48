"""The ``mantle-node`` command line (see :mod:`mantle.commands` for the convention)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mantle.commands import build_parser as _build_parser
from mantle.commands import dispatch

#: Subcommand modules, imported in this order (an explicit list, not discovery).
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "nodes._cli_release",
    "nodes._cli_model",
    "nodes._cli_daemon",
    "nodes._cli_dev",
)


def build_parser() -> argparse.ArgumentParser:
    return _build_parser(
        "mantle-node",
        "Mantle node and operator tooling: run a node or a dev cluster; releases, "
        "transparency log, models.",
        SUBCOMMAND_MODULES,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
