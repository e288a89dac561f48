"""The ``mantle-node`` command line (see :mod:`mantle.commands` for the convention)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
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


#: What a node needs beyond the client (the ``server`` extra of pyproject.toml).
SERVER_MODULES: tuple[str, ...] = ("hypercorn", "llama_cpp")


def missing_server_modules() -> list[str]:
    """The server extra's modules this installation lacks (a client-only install)."""
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    missing = missing_server_modules()
    if missing:
        print(
            f"mantle-node needs the server extra ({', '.join(missing)} not installed): "
            "pip install 'mantle[server]'",
            file=sys.stderr,
        )
        return 2
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
