"""One seed, one run: the built-in workload's trace hash is a function of the
seed, in one process and across processes with different hash seeds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from simulations.kernel._workload import KernelConfig, run_kernel_workload

REPO = Path(__file__).resolve().parents[2]
SMALL = {"nodes": 4, "actors": 20, "messages": 1500}


def _hash(seed: int) -> str:
    result = run_kernel_workload(KernelConfig(seed=seed, **SMALL))
    assert result.ok, result.summary()
    return result.trace_sha256


def _cli_hash(seed: int, hash_seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "simulations.cli", "kernel", "--seed", str(seed)]
    for key, value in SMALL.items():
        argv += [f"--{key}", str(value)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"^trace sha256: ([0-9a-f]{64})$", done.stdout, re.MULTILINE)
    assert match, done.stdout
    return match.group(1)


def test_same_seed_same_hash_in_one_process() -> None:
    assert _hash(11) == _hash(11)


def test_different_seeds_different_hashes() -> None:
    assert len({_hash(seed) for seed in (1, 2, 3)}) == 3


def test_same_seed_same_hash_across_processes_and_hash_seeds() -> None:
    in_process = _hash(5)
    assert _cli_hash(5, "0") == in_process
    assert _cli_hash(5, "4242") == in_process


def test_workload_exercises_faults_and_checks_hold() -> None:
    result = run_kernel_workload(KernelConfig(seed=3, **SMALL))
    assert result.ok, result.summary()
    assert result.crashes_injected > 0 and result.restarts >= result.crashes_injected
    assert result.network["partitions"] == 1 and result.network["links_lost"] > 0
    assert result.network["lost"] > 0 and result.network["reordered"] > 0
    outcomes = result.ledger.ask_outcomes
    assert outcomes.get("ok", 0) > 0 and outcomes.get("unavailable", 0) > 0
    assert result.ledger.finished == SMALL["messages"]
