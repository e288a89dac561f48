"""The ``mantle-sim`` command line (see :mod:`mantle.commands` for the convention)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mantle.commands import build_parser as _build_parser
from mantle.commands import dispatch

#: Subcommand modules, imported in this order (an explicit list, not discovery).
SUBCOMMAND_MODULES: tuple[str, ...] = ("simulations._cli_kernel", "simulations._cli_tpm")


def build_parser() -> argparse.ArgumentParser:
    return _build_parser(
        "mantle-sim",
        "Mantle's deterministic simulator: one seed reproduces a whole run.",
        SUBCOMMAND_MODULES,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
