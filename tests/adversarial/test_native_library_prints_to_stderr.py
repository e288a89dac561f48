"""Attack: get unvetted text into the node's logs through a native library.

tpm2-tss prints ESYS errors and llama.cpp its loading chatter straight to
file descriptor 2 from C, past Python's logging; llama.cpp can print prompt
tokens. Without the daemon's capture that text lands in the node's standard
error between the JSON lines (breaking them) and in whatever collects them.
Here a process set up as the daemon sets itself up writes a canary through
``os.write(2, ...)``, through libc's ``write`` (C, as a native library
does), to fd 1, and through ``sys.stderr`` (an uncaught traceback's path): every
line on the real standard error and in the log file must be a JSON event, the
canary in none of them, each native line reported as ``native_output`` with its
descriptor and length only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CANARY = "canary-native-7d1c prompt text"

SCRIPT = r"""
import ctypes, os, sys
from pathlib import Path
from actors.log import get_logger
from nodes.daemon.logs import NativeOutputCapture, route_logs

canary = sys.argv[2].encode()
with NativeOutputCapture() as capture:
    log_file = route_logs(capture, Path(sys.argv[1]), "info")
    get_logger("test").info("python_event", count=1)
    os.write(2, b"ERROR:esys:src/tss2-esys/api/Esys_Quote.c " + canary + b"\n")
    libc = ctypes.CDLL(None)
    line = b"llama_model_load: " + canary + b"\n"
    libc.write(2, line, len(line))
    os.write(1, canary + b" on stdout\n")
    sys.stderr.write("Traceback (most recent call last): " + sys.argv[2] + "\n")
    sys.stderr.flush()
    os.write(2, b"no newline at the end " + canary)
log_file.close()
"""


def test_native_output_is_reduced_to_fixed_events(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), CANARY],
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0
    assert CANARY.encode() not in result.stdout + result.stderr
    assert CANARY not in log.read_text()
    assert result.stdout == b""
    events = [json.loads(line) for line in result.stderr.decode().splitlines()]
    assert events, "nothing was logged"
    native = [e for e in events if e["event"] == "native_output"]
    esys = len(b"ERROR:esys:src/tss2-esys/api/Esys_Quote.c " + CANARY.encode())
    lengths = sorted((e["fd"], e["bytes"]) for e in native)
    assert (2, esys) in lengths
    assert (2, len(b"llama_model_load: " + CANARY.encode())) in lengths
    assert (1, len(CANARY) + len(" on stdout")) in lengths
    assert (2, len(b"no newline at the end " + CANARY.encode())) in lengths
    assert len(native) == 5
    assert any(e["event"] == "python_event" for e in events)
    # The log file holds the same events (the capture's last lines may
    # arrive after the file closed, never before it opened).
    in_file = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e["event"] == "python_event" for e in in_file)
