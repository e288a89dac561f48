"""The ``mantle`` command line (see :mod:`mantle.commands` for the convention)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mantle.commands import build_parser as _build_parser
from mantle.commands import dispatch

#: Subcommand modules, imported in this order (an explicit list, not discovery).
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "mantle._cli_attest",
    "mantle._cli_verify",
    "mantle._cli_chat",
    "mantle._cli_receipt",
)


def build_parser() -> argparse.ArgumentParser:
    return _build_parser(
        "mantle",
        "Mantle client: verify attestations, talk to Mantle clusters.",
        SUBCOMMAND_MODULES,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
