"""The daemon's log output: JSON lines on standard error and in ``<data_dir>/node.log``.

Only :mod:`actors.log`'s fail-closed pipeline writes to either. Native
libraries linked into the process (tpm2-tss prints ESYS errors, llama.cpp
prints its loading chatter) write to file descriptors 1 and 2 straight from
C, past Python; their text would break the JSON-lines stream and has not
been vetted (llama.cpp can print a prompt's tokens). So :class:`NativeOutputCapture`
moves the process's descriptors 1 and 2 onto pipes at the OS level, keeps a
duplicate of the original standard error for the log pipeline, and a thread
per pipe turns every native line into one fixed event, ``native_output``,
naming the descriptor and the line's length -- never its text. Python's own
``sys.stderr`` writes (an uncaught traceback) take the same path: they are
counted, not shown.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from pathlib import Path
from typing import Final, TextIO

from actors.log import configure_logging, get_logger

#: A native "line" longer than this is reported in pieces of this size.
MAX_NATIVE_LINE: Final = 64 * 1024
_READ_SIZE: Final = 64 * 1024
_JOIN_TIMEOUT_S: Final = 5.0

_log = get_logger("native")


class TeeStream(io.TextIOBase):
    """A text stream writing every line to each of its targets, under one lock,
    so events from several threads never interleave mid-line."""

    def __init__(self, *targets: TextIO) -> None:
        self._targets = targets
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            for target in self._targets:
                # A closed or broken target (the reader of stderr went away)
                # must not take the node down or stop the other target.
                with contextlib.suppress(OSError, ValueError):
                    target.write(text)
                    target.flush()
        return len(text)

    def flush(self) -> None:
        return None


class NativeOutputCapture:
    """Descriptors 1 and 2 on pipes, read by threads that log ``native_output``.

    Use as a context manager, once per process (the daemon's): on entry the
    descriptors are moved; on exit they are pointed at ``/dev/null`` (which
    closes the pipes' write ends), the reader threads see end of file, report
    what was left, and end. They are not given back to the original streams:
    what native code, a thread still running or the interpreter's shutdown
    ("Exception ignored in ...", a traceback) writes after the capture ended
    would reach them unvetted. :attr:`log_stream` writes to the original
    standard error, for the log pipeline, which keeps writing there after exit.
    """

    def __init__(self, descriptors: tuple[int, ...] = (1, 2)) -> None:
        self._descriptors = descriptors
        #: The descriptors moved onto pipes.
        self._moved: list[int] = []
        self._threads: list[threading.Thread] = []
        self.log_stream: TextIO | None = None
        #: Lines reported per descriptor (read after exit; for tests and stats).
        self.lines: dict[int, int] = dict.fromkeys(descriptors, 0)

    def __enter__(self) -> NativeOutputCapture:
        for fd in self._descriptors:
            with contextlib.suppress(OSError, ValueError):
                # Python-level buffers first, so nothing written before lands in a pipe.
                (sys.stdout if fd == 1 else sys.stderr).flush()
        original_stderr = os.dup(2)
        os.set_inheritable(original_stderr, False)
        self.log_stream = open(original_stderr, "w", encoding="utf-8", closefd=True)
        for fd in self._descriptors:
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            self._moved.append(fd)
            os.close(write_end)
            thread = threading.Thread(
                target=self._read, args=(fd, read_end), name=f"native-fd{fd}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        for fd in self._descriptors:
            with contextlib.suppress(OSError, ValueError):
                (sys.stdout if fd == 1 else sys.stderr).flush()
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            for fd in self._moved:
                # Not the original: nothing written to fd 1 or 2 from now on is
                # shown. The pipe's last write end closes: its reader sees EOF.
                os.dup2(null, fd)
        finally:
            os.close(null)
        self._moved.clear()
        for thread in self._threads:
            thread.join(_JOIN_TIMEOUT_S)
        self._threads.clear()
        # Whatever logs after this still goes through the pipeline, to the
        # original standard error only (the log file is the caller's to close).
        if self.log_stream is not None:
            configure_logging(TeeStream(self.log_stream), level="info")  # type: ignore[arg-type]

    def _read(self, fd: int, read_end: int) -> None:
        pending = 0  # bytes of the current line seen so far
        try:
            while True:
                chunk = os.read(read_end, _READ_SIZE)
                if not chunk:
                    break
                start = 0
                while True:
                    newline = chunk.find(b"\n", start)
                    if newline < 0:
                        pending += len(chunk) - start
                        while pending >= MAX_NATIVE_LINE:
                            self._report(fd, MAX_NATIVE_LINE)
                            pending -= MAX_NATIVE_LINE
                        break
                    self._report(fd, pending + newline - start)
                    pending = 0
                    start = newline + 1
            if pending:
                self._report(fd, pending)
        finally:
            os.close(read_end)

    def _report(self, fd: int, length: int) -> None:
        self.lines[fd] = self.lines.get(fd, 0) + 1
        # Fixed event: the descriptor and the length only, never the text.
        _log.info("native_output", fd=fd, bytes=length)


def route_logs(capture: NativeOutputCapture, log_file: Path | None, level: str) -> TextIO | None:
    """Configure the JSON pipeline to write to the original standard error and,
    when given, to ``log_file`` (appended to, created 0600). Returns the open
    log file, which the caller closes after the capture ended."""
    assert capture.log_stream is not None
    targets: list[TextIO] = [capture.log_stream]
    file: TextIO | None = None
    if log_file is not None:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        file = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - the caller closes it
        targets.append(file)
    configure_logging(TeeStream(*targets), level=level)  # type: ignore[arg-type]
    return file
