"""The layering contracts (.importlinter) hold for the tree, and catch what they promise to.

The second half builds a small tree with the project's package names in a
temporary directory, breaks one rule at a time, and runs ``lint-imports`` with
the project's own contract file on it: each break must fail the check, which
is what makes ``tools/test`` (and so CI) fail on a real violation.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("protocol", "actors", "nodes", "simulations", "mantle")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "tools"), str(root)]),
    }
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(REPO / ".importlinter")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _verdicts(report: str) -> dict[str, str]:
    """``{contract name: "KEPT" | "BROKEN"}`` from lint-imports' summary (long
    names wrap across lines there)."""
    summary = " ".join(report.split("Contracts\n---------", 1)[-1].split())
    verdicts: dict[str, str] = {}
    parts = re.split(r"(KEPT|BROKEN)", summary.split("Contracts:", 1)[0])
    # re.split with a group alternates: name, verdict, name, verdict, ...
    for name, verdict in zip(parts[0::2], parts[1::2], strict=False):
        verdicts[name.split("-----")[-1].strip(" -")] = verdict
    return verdicts


def _tree(root: Path, extra: dict[str, str]) -> None:
    """A minimal tree: every package with a private submodule, plus ``extra``."""
    for package in PACKAGES:
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        (root / package / "_inner.py").write_text("")
    for relative, text in extra.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # External modules the contracts name must exist for the graph to include them.
    for external in ("llama_cpp", "hypercorn", "tpm2_pytss", "socket_shim"):
        (root / external).mkdir(exist_ok=True)
        (root / external / "__init__.py").write_text("")


def test_the_tree_keeps_every_contract() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", ".importlinter"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "tools")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "text", "contract"),
    [
        ("protocol/leak.py", "import nodes\n", "protocol is pure"),
        ("protocol/leak.py", "import actors\n", "protocol is pure"),
        ("actors/leak.py", "import simulations\n", "actors import no composition root"),
        ("actors/leak.py", "import socket\n", "actors import no composition root"),
        ("actors/leak.py", "import llama_cpp\n", "actors import no composition root"),
        ("mantle/leak.py", "import nodes\n", "the client imports no server code"),
        ("mantle/leak.py", "import hypercorn\n", "the client imports no server code"),
        ("nodes/leak.py", "import actors._inner\n", "nothing outside a package imports"),
        ("simulations/leak.py", "from mantle import _inner\n", "nothing outside a package"),
    ],
)
def test_a_deliberate_violation_fails_the_check(
    tmp_path: Path, module: str, text: str, contract: str
) -> None:
    _tree(tmp_path, {module: text})
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout[-2000:]
    assert _verdicts(result.stdout) == {
        name: ("BROKEN" if name.startswith(contract) else "KEPT")
        for name in _verdicts(result.stdout)
    }, result.stdout[-2000:]
    assert "BROKEN" in _verdicts(result.stdout).values()


def test_a_package_may_import_its_own_private_modules(tmp_path: Path) -> None:
    _tree(tmp_path, {"actors/ok.py": "from actors import _inner\n"})
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]
