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

Every numeric option is parsed by :class:`IntegerIn` or :class:`NumberIn`,
bounded to what the command can work with, so no number reaches arithmetic
unchecked (``round(1e308 * 1000)`` once ended ``mantle attest inspect`` in
an ``OverflowError``) and a bad value is a usage error with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
from collections.abc import Sequence
from typing import Final

#: The last millisecond a ``datetime`` can hold (9999-12-31T23:59:59.999Z):
#: the upper bound of every command-line time, so no conversion overflows.
MAX_UNIX_MS: Final = 253_402_300_799_999
#: Ten years: the longest age or validity any command accepts, in seconds.
MAX_SECONDS: Final = 10 * 365 * 24 * 3600

# Plain ASCII decimal, at most 20 digits (u64): int() alone would also take
# "1_000", " 7", Unicode digits and 4300-digit strings it is slow to convert.
_DECIMAL: Final = re.compile(r"-?[0-9]{1,20}")
_MAX_NUMBER_TEXT: Final = 32


class IntegerIn:
    """An argparse ``type``: a decimal integer in ``[low, high]``.

    Every number a command line takes goes through one of these bounded types
    (a test walks every parser to check), so arithmetic on it cannot overflow
    or run away, and a bad value is a usage error (exit 2), never a traceback.
    """

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high
        self.__name__ = "integer"  # argparse names the type in some messages

    def __call__(self, text: str) -> int:
        if not _DECIMAL.fullmatch(text) or not self.low <= int(text) <= self.high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {self.low} to {self.high}"
            )
        return int(text)


class NumberIn:
    """An argparse ``type``: a finite decimal number in ``[low, high]``.

    NaN and infinity are refused (NaN passes every comparison), and so is
    anything beyond ``high`` before it can reach ``round`` or a ``timedelta``.
    """

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high
        self.__name__ = "number"

    def __call__(self, text: str) -> float:
        value = math.nan
        if len(text) <= _MAX_NUMBER_TEXT:
            try:
                value = float(text)
            except ValueError:
                value = math.nan
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(
                f"expected a number from {self.low:g} to {self.high:g}"
            )
        return value


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
