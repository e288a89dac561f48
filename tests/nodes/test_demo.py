"""The main job (``make demo``) end to end, as a user runs it.

A local cluster of separate node processes on simulated NitroTPMs serves the
demo model; the client verifies the release and the ingress's attestation
(its own nonce, the pinned TLS key bound) before it asks through the official
SDK; every process is stopped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_demo_runs_a_cluster_verifies_it_and_streams_an_answer() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "nodes.demo", "--max-tokens", "16"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    text = done.stdout
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "[client] release v1 verified" in text
    assert "attested: chain to a SIMULATED attestation root" in text
    assert "TLS key bound into the document" in text
    for register in (4, 7, 12, 8, 13, 14):
        assert f"PCR{register}=" in text
    answer = text.split("[client] answer: ", 1)[1].split("\n[client] done:", 1)[0]
    assert answer.strip(), "the model produced no text"
    assert "[client] done: length, " in text
    assert "[cluster] every node stopped" in text
