"""The main job (``make demo``) end to end, with a canary prompt.

Runs the real path: signed and logged release, measured boot on simulated
NitroTPMs, sealed weights released to the attested node, llama.cpp on the
demo model, a client that verifies attestation before sending, and an
impostor node that the client refuses.
"""

from __future__ import annotations

import io
import json

import pytest

from actors.log import configure_logging
from nodes.demo import demo_model_path, run_demo

pytestmark = pytest.mark.anyio

CANARY = "CANARY-4b1d0e Which colour is the sky on a clear day?"


async def test_demo_serves_the_model_to_a_verifying_client_and_refuses_an_impostor() -> None:
    logs = io.StringIO()
    configure_logging(logs, level="debug")
    out = io.StringIO()
    await run_demo(CANARY, out, model=demo_model_path(), max_tokens=24)
    text = out.getvalue()

    assert "[release] v1 signed by 2 of 3" in text
    assert "passed measured boot" in text
    assert "data key released to the attested inference node" in text
    assert "verified: chain to the pinned root" in text
    answer = text.split("[client] answer: ", 1)[1].split("\n[client] done:", 1)[0]
    assert answer.strip(), "the model produced no text"
    assert "[client] done: " in text
    assert "impostor node refused during the handshake (pcr_policy)" in text

    # The client prints its own prompt; nothing else may carry it.
    assert CANARY not in logs.getvalue()
    for line in logs.getvalue().splitlines():
        json.loads(line)
