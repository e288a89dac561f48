"""Attack: crash a command line with a hostile number (``--max-age 1e308``).

``mantle attest inspect --max-age 1e308`` passed the finite check and ended in
``OverflowError`` from ``round(1e308 * 1000)``; ``--expires-days`` with a
huge value overflowed ``timedelta``, a negative ``--threshold`` reached the
metadata builder, a port outside 0-65535 reached the server. Every numeric
option of every command line (``mantle``, ``mantle-node``, ``mantle-sim``,
the demo) is driven here with hostile values: each must be refused while the
arguments are parsed, as a usage error naming the option (exit status 2),
never a traceback and never after the command started working. A second test
walks every parser so that a numeric option added later without a bound (or
without a row here) fails.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from mantle import cli as mantle_cli
from nodes import cli as node_cli
from nodes import demo
from simulations import cli as sim_cli

MAX_UNIX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
TEN_YEARS_S = 10 * 365 * 24 * 3600
PCR_DIGEST = "ab" * 48


@dataclass(frozen=True)
class NumericOption:
    """One number a command line takes, where it sits and what it may be."""

    program: str
    command: tuple[str, ...]
    option: str
    low: float
    high: float
    integer: bool = True
    #: How the number is written into the argument (compound arguments).
    template: str = "{}"

    @property
    def label(self) -> str:
        return f"{self.program} {' '.join(self.command)} {self.option}".replace("  ", " ")


OPTIONS = (
    NumericOption("mantle", ("attest", "inspect"), "--max-age", 0, TEN_YEARS_S, integer=False),
    NumericOption("mantle", ("attest", "inspect"), "--at", 0, MAX_UNIX_MS),
    NumericOption("mantle", ("verify",), "--timeout", 1, 600, integer=False),
    NumericOption("mantle", ("chat",), "--max-tokens", 1, 8192),
    NumericOption("mantle", ("chat",), "--timeout", 1, 600, integer=False),
    NumericOption("mantle-node", ("release", "init"), "--threshold", 1, 256),
    NumericOption("mantle-node", ("release", "init"), "--root-threshold", 1, 256),
    NumericOption("mantle-node", ("release", "init"), "--expires-days", 1, 3650),
    NumericOption("mantle-node", ("release", "build"), "--version", 1, 2**32 - 1),
    NumericOption("mantle-node", ("release", "build"), "--expires-days", 1, 3650),
    NumericOption("mantle-node", ("release", "build"), "--floor", 0, 2**32 - 1),
    NumericOption("mantle-node", ("release", "verify"), "--min-version", 0, 2**32 - 1),
    NumericOption("mantle-node", ("model", "add"), "--key-version", 1, 2**32 - 1),
    NumericOption("mantle-node", ("model", "add"), "--chunk-size", 1, 16 * 1024 * 1024),
    NumericOption("mantle-node", ("model", "add"), "--max-document-age", 1, TEN_YEARS_S),
    NumericOption("mantle-node", ("tlog", "serve"), "--bind", 0, 65535, template="127.0.0.1:{}"),
    NumericOption("mantle-node", ("dev",), "--port", 0, 65535),
    NumericOption("mantle-node", ("dev",), "--inference-nodes", 1, 64),
    NumericOption("mantle-node", ("dev",), "--startup-timeout", 1, 3600),
    NumericOption("mantle-sim", ("kernel",), "--seed", 0, 2**64 - 1),
    NumericOption("mantle-sim", ("kernel",), "--nodes", 1, 256),
    NumericOption("mantle-sim", ("kernel",), "--actors", 1, 100_000),
    NumericOption("mantle-sim", ("kernel",), "--messages", 1, 10_000_000),
    NumericOption("mantle-sim", ("tpm", "attest"), "--timestamp-ms", 0, MAX_UNIX_MS),
    NumericOption("mantle-sim", ("tpm", "attest"), "--pcr", 0, 23, template="{}=" + PCR_DIGEST),
    NumericOption("demo", (), "--max-tokens", 1, 8192),
)


def hostile_values(option: NumericOption) -> list[str]:
    values = [
        "1e308",
        "1e400",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "-1",
        "0x10",
        "",
        "9" * 30,
        "9" * 5000,
        str(2**64),
        str(2**1000),
        "12abc",
        repr(option.high * 1.5) if not option.integer else str(int(option.high) + 1),
    ]
    if option.low > 0:
        values.append(str(option.low - 1) if option.integer else repr(option.low / 2))
    else:
        values.append("-0.5" if not option.integer else str(int(option.low) - 1))
    if option.integer:
        # int() would take these; a command-line number should not.
        values += ["1.5", " 7", "1_000", "\u0663", "+3"]
    return values


CASES = [
    pytest.param(option, value, id=f"{option.label} {value[:12]!r}")
    for option in OPTIONS
    for value in hostile_values(option)
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real inputs for the other arguments, so that only the hostile number is wrong."""
    base = tmp_path_factory.mktemp("cli")
    paths = {name: base / name for name in ("root.pem", "doc.cbor", "log.pem", "log.sqlite")}
    assert sim_cli.main(["tpm", "root", "--seed", "n", "-o", str(paths["root.pem"])]) == 0
    attest = ["tpm", "attest", "--seed", "n", "--timestamp-ms", "1760000000000"]
    assert sim_cli.main([*attest, "-o", str(paths["doc.cbor"])]) == 0
    assert node_cli.main(["tlog", "keygen", "--out", str(paths["log.pem"])]) == 0
    log_key = ["--key", str(paths["log.pem"])]
    assert node_cli.main(["tlog", "init", "--db", str(paths["log.sqlite"]), *log_key]) == 0
    paths["log.pub.pem"] = base / "log.pub.pem"
    paths["base"] = base
    return paths


def _other_arguments(option: NumericOption, files: dict[str, Path]) -> list[str]:
    base = files["base"]
    match (option.program, option.command):
        case ("mantle", ("attest", "inspect")):
            return [str(files["doc.cbor"]), "--root", str(files["root.pem"])]
        case ("mantle", ("verify",)):
            return ["https://127.0.0.1:9", "--pins", str(base), "--tls-cert", str(base / "c.pem")]
        case ("mantle", ("chat",)):
            trust = ["--pins", str(base), "--tls-cert", str(base / "c.pem")]
            return ["https://127.0.0.1:9", *trust, "--api-key", "k", "a question"]
        case ("mantle-node", ("release", "init")):
            return ["--root", str(base / "new-root.json"), "--threshold", "1"]
        case ("mantle-node", ("release", "build")):
            return ["--out", str(base / "targets.json"), "--version", "1"]
        case ("mantle-node", ("release", "verify")):
            return ["--release-dir", str(base), "--trusted-root", str(base / "root.json")]
        case ("mantle-node", ("model", "add")):
            return [
                str(base / "model.gguf"), "--model-id", "m", "--store", str(base / "store"),
                "--keys-document", str(files["doc.cbor"]), "--keys-static", "00" * 32,
                "--keys-policy", str(base / "policy.json"),
            ]  # fmt: skip
        case ("mantle-node", ("tlog", "serve")):
            return ["--db", str(files["log.sqlite"]), "--log-key", str(files["log.pub.pem"])]
        case ("mantle-sim", ("kernel",)):
            return ["--seed", "1"]
        case ("mantle-sim", ("tpm", "attest")):
            return ["--seed", "n", "-o", str(base / "out.cbor")]
        case _:
            return []


def _main(program: str) -> Callable[[Sequence[str]], int]:
    return {
        "mantle": mantle_cli.main,
        "mantle-node": node_cli.main,
        "mantle-sim": sim_cli.main,
        "demo": demo.main,
    }[program]


@pytest.mark.parametrize(("option", "value"), CASES)
def test_hostile_number_is_a_usage_error(
    option: NumericOption, value: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # OPTION=VALUE, so that "-inf" is not read as an option of its own. The
    # hostile option comes last: the others alone would parse.
    argv = [
        *option.command,
        *_other_arguments(option, files),
        f"{option.option}={option.template.format(value)}",
    ]
    with pytest.raises(SystemExit) as exited:
        _main(option.program)(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and f"argument {option.option}" in err, err
    assert "Traceback" not in err


def test_the_original_report_is_a_usage_error(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    document, root = str(files["doc.cbor"]), str(files["root.pem"])
    with pytest.raises(SystemExit) as exited:
        mantle_cli.main(["attest", "inspect", document, "--root", root, "--max-age", "1e308"])
    assert exited.value.code == 2
    assert "--max-age" in capsys.readouterr().err


def test_the_bounds_themselves_run_without_a_traceback(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # The extremes a bound lets through reach real work and end in a verdict.
    document, root = str(files["doc.cbor"]), str(files["root.pem"])
    inspect = ["attest", "inspect", document, "--root", root]
    for extra in (
        ["--max-age", str(TEN_YEARS_S), "--at", str(MAX_UNIX_MS)],
        ["--max-age", "0", "--at", "0"],
    ):
        assert mantle_cli.main([*inspect, *extra]) == 1  # rejected: certificate validity
    base = files["base"]
    for timestamp in ("0", str(MAX_UNIX_MS)):
        out = str(base / f"sim-{timestamp}.cbor")
        assert (
            sim_cli.main(["tpm", "attest", "--seed", "b", "--timestamp-ms", timestamp, "-o", out])
            == 1
        )
    init = ["release", "init", "--threshold", "256", "--root-threshold", "256"]
    assert node_cli.main([*init, "--root", str(base / "r.json"), "--expires-days", "3650"]) == 0
    capsys.readouterr()


# ----------------------------------------------------------------------------- coverage


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield "mantle", mantle_cli.build_parser()
    yield "mantle-node", node_cli.build_parser()
    yield "mantle-sim", sim_cli.build_parser()
    yield "demo", demo.build_parser()


def _actions(
    parser: argparse.ArgumentParser, command: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, (*command, name))
        else:
            yield command, action


def test_every_numeric_option_is_bounded_and_driven_here() -> None:
    from mantle.commands import IntegerIn, NumberIn

    listed = {(o.program, o.command, o.option): o for o in OPTIONS if o.template == "{}"}
    found = set()
    for program, parser in _parsers():
        for command, action in _actions(parser):
            assert action.type not in (int, float), f"{program} {command} {action.dest}: unbounded"
            if isinstance(action.type, IntegerIn | NumberIn):
                key = (program, command, action.option_strings[-1])
                assert key in listed, f"{key} is not driven by this test"
                option = listed[key]
                assert (action.type.low, action.type.high) == (option.low, option.high), key
                assert isinstance(action.type, IntegerIn) is option.integer, key
                found.add(key)
    assert found == set(listed)
