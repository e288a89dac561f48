"""The client installs on its own: ``pip install mantle`` with no extras.

A user who only wants the client must not compile llama.cpp (some ten
minutes) or install the HTTPS server: those are the ``server`` extra. This
test copies the project's packaging inputs into a scratch directory, makes a
fresh virtual environment, installs the project there with no extras (pip's
cache keeps it to seconds once warm), and checks that ``mantle verify
--help`` and ``import mantle`` work while ``llama_cpp``, ``hypercorn`` and
``tpm2_pytss`` cannot be imported; ``mantle-node`` then says it needs the
server extra instead of ending in a traceback.

It needs a package index. Whether pip can reach one is found by trying (a
``pip download`` of the build backend); only if that fails is the test
skipped, saying so. CI reaches PyPI, so there it always runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What a build of the distribution reads: the metadata and the packages it lists.
PACKAGING_INPUTS = ("pyproject.toml", "README.md")
PACKAGES = ("actors", "protocol", "nodes", "simulations", "mantle")
SERVER_ONLY = ("llama_cpp", "hypercorn", "tpm2_pytss")
#: Generous bounds (a shared machine, a cold cache); a warm install takes ~20 s.
PROBE_TIMEOUT_S = 180
INSTALL_TIMEOUT_S = 900


def _run(argv: list[str | Path], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _copy_sources(into: Path) -> Path:
    source = into / "mantle-src"
    source.mkdir()
    for name in PACKAGING_INPUTS:
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    return source


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("client-alone")
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", venv], timeout=PROBE_TIMEOUT_S)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    probe = _run(
        [python, "-m", "pip", "download", "--no-deps", "--dest", base / "probe", "setuptools"],
        timeout=PROBE_TIMEOUT_S,
    )
    if probe.returncode != 0:
        pytest.skip(
            "pip cannot reach a package index here (a trial `pip download setuptools` "
            "failed), so the client cannot be installed into a fresh environment"
        )
    source = _copy_sources(base)
    installed = _run([python, "-m", "pip", "install", source], timeout=INSTALL_TIMEOUT_S)
    assert installed.returncode == 0, installed.stdout[-4000:] + installed.stderr[-4000:]
    return venv


def test_mantle_verify_help_runs(client_venv: Path) -> None:
    result = _run([client_venv / "bin" / "mantle", "verify", "--help"], timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--tls-cert" in result.stdout and "--release-root" in result.stdout


def test_import_mantle_without_the_server_extra(client_venv: Path) -> None:
    script = (
        "import importlib.util, mantle, mantle.cli\n"
        f"present = [m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m) is not None]\n"
        "print('present:', present)\n"
    )
    result = _run([client_venv / "bin" / "python", "-c", script], timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "present: []"


def test_mantle_node_asks_for_the_server_extra(client_venv: Path) -> None:
    result = _run([client_venv / "bin" / "mantle-node", "--help"], timeout=60)
    assert result.returncode == 2
    assert "pip install 'mantle[server]'" in result.stderr
    assert "Traceback" not in result.stderr
