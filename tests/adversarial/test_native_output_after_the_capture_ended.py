"""Attack: have native code write its text after the daemon's capture of fds 1 and 2 ended.

The capture (``nodes.daemon.logs``) turns every native line into a
``native_output`` event while it runs. It used to give fds 1 and 2 back to
the original streams on exit, so what came after went out verbatim: a
worker thread of a native library still printing (llama.cpp's chatter can
hold a prompt's tokens), the interpreter's shutdown messages ("Exception
ignored in ...", which quote exception messages and reprs), an uncaught
exception's traceback with its message. Here a thread keeps writing a canary
through libc after the capture ended, the script writes it through fd 2,
``sys.stderr`` and fd 1, and finally dies of an exception whose message holds
it: none of it may reach the process's real standard error or output, which
keep carrying only the log pipeline's JSON events.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CANARY = "canary-after-capture-93b2 prompt text"

SCRIPT = r"""
import ctypes, os, sys, threading
from actors.log import get_logger
from nodes.daemon.logs import NativeOutputCapture, route_logs

canary = sys.argv[1].encode()
libc = ctypes.CDLL(None)
capture_ended = threading.Event()
written = threading.Event()

def late_native_writer():
    capture_ended.wait()
    line = b"llama_print_timings: " + canary + b"\n"
    libc.write(2, line, len(line))
    libc.write(1, line, len(line))
    written.set()

threading.Thread(target=late_native_writer).start()
with NativeOutputCapture() as capture:
    route_logs(capture, None, "info")
    get_logger("test").info("during_capture", count=1)
capture_ended.set()
written.wait()
os.write(2, b"after: " + canary + b"\n")
sys.stderr.write("after: " + sys.argv[1] + "\n")
sys.stderr.flush()
print(sys.argv[1], flush=True)
get_logger("test").info("after_capture", count=2)
raise RuntimeError("uncaught: " + sys.argv[1])
"""


def test_nothing_unvetted_after_the_capture(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, CANARY],
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 1  # the uncaught exception
    assert CANARY.encode() not in result.stdout + result.stderr
    assert result.stdout == b""
    events = [json.loads(line) for line in result.stderr.decode().splitlines()]
    names = [event["event"] for event in events]
    assert "during_capture" in names
    # The pipeline itself still reaches the real standard error after the capture.
    assert "after_capture" in names
