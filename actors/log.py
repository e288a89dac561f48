"""Fail-closed structured logging (invariant I2, docs/architecture.md §12).

Every process (node daemon, simulator, client CLI) calls
:func:`configure_logging` once; code logs through :func:`get_logger`. The
pipeline emits JSON lines and is built so that customer data cannot get out
even when a caller makes a mistake:

* **Keys are allowlisted.** An event may carry only the keys in
  :data:`ALLOWED_KEYS`; any other key is dropped and counted in
  ``dropped_keys``. A new key is a reviewed change to this file, not a
  side effect of a call site.
* **Values are typed.** Only ``None``, ``bool``, ``int``, ``float`` and ``str``
  pass (and tuples/lists of them, flattened to lists). :class:`CustomerData`
  renders as the redaction marker; anything else renders as
  ``<unloggable:TypeName>`` because its ``repr`` is code we do not control.
* **Exceptions are logged by type and location only.** ``exc_info`` becomes
  ``error_type`` (the class name) and ``error_location`` (``file:line`` of
  the innermost frame). Exception *messages* never reach the output: on the
  paths that handle customer data they may contain it.
* **The pipeline fails closed.** If any processor raises, the event is
  replaced by a fixed ``log_pipeline_error`` record naming only the
  exception type; the original event is dropped, never printed raw.
* **Standard-library logging is muted to metadata.** Third-party libraries
  (hypercorn, httpx2, llama-cpp) log through :mod:`logging` with free-text
  messages and arguments; those records are reduced to logger name and
  level.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO, cast

import structlog

from protocol.customer_data import REDACTED, CustomerData

# The keys an event may carry. Values under these keys are still type-checked
# (see _render_value); the allowlist exists so that an unexpected key — say a
# request body passed as ``body=...`` — is dropped rather than rendered.
ALLOWED_KEYS: Final = frozenset(
    {
        # structlog's own
        "event",
        "level",
        "timestamp",
        "logger",
        # identity of the emitter
        "node",
        "actor",
        "component",
        "role",
        "peer",
        "child",
        "supervisor",
        "strategy",
        # routing metadata (docs/architecture.md §2: not customer data)
        "request_id",
        "tenant",
        "model",
        "release_version",
        # sizes, counts, timings
        "count",
        "fd",  # which descriptor a native library wrote to (never what it wrote)
        "size",
        "bytes",
        "tokens",
        "duration_ms",
        "attempt",
        "restarts",
        "queue_depth",
        # state and outcomes
        "state",
        "reason",
        "check",
        "error_type",
        "error_location",
        "dropped_keys",
        # addresses and versions of the software itself
        "host",
        "port",
        "version",
        "seed",
        "path",
    }
)

_UNLOGGABLE: Final = "<unloggable:{}>"
_MAX_STR: Final = 512
_MAX_ITEMS: Final = 32


def _render_value(value: object, depth: int = 0) -> object:
    """Reduce ``value`` to a JSON-safe value that cannot carry customer data
    by accident: primitives pass, CustomerData redacts, the rest is named by
    type only."""
    if isinstance(value, CustomerData):
        return REDACTED
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_STR else value[:_MAX_STR] + "…"
    if isinstance(value, (tuple, list, frozenset, set)) and depth == 0:
        items = list(value)[:_MAX_ITEMS]
        if isinstance(value, (set, frozenset)):
            # Sets have no order; sort what sorts so output is stable.
            items = sorted(items, key=repr) if all(isinstance(i, str) for i in items) else items
        return [_render_value(v, depth + 1) for v in items]
    return _UNLOGGABLE.format(type(value).__name__)


def exception_summary(exc: BaseException) -> dict[str, str]:
    """``error_type`` and ``error_location`` of an exception, never its text.

    The location is the innermost frame of the traceback (where it was
    raised), as ``file:line`` with the file's base name, which identifies the
    code without exposing the deployment's directory layout.
    """
    location = "unknown"
    tb = exc.__traceback__
    if tb is not None:
        frames = traceback.extract_tb(tb)
        if frames:
            last = frames[-1]
            location = f"{os.path.basename(last.filename)}:{last.lineno}"
    return {"error_type": type(exc).__name__, "error_location": location}


def _exception_to_type_and_location(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    exc_info = event_dict.pop("exc_info", None)
    event_dict.pop("exception", None)
    event_dict.pop("stack_info", None)
    exc: BaseException | None = None
    if isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc = exc_info[1] if isinstance(exc_info[1], BaseException) else None
    elif exc_info:
        exc = sys.exc_info()[1]
    if exc is not None:
        event_dict.update(exception_summary(exc))
    return event_dict


def _allowlist(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    out: dict[str, Any] = {}
    dropped = 0
    for key, value in event_dict.items():
        if key in ALLOWED_KEYS:
            out[key] = _render_value(value)
        else:
            dropped += 1
    event = out.get("event")
    if not isinstance(event, str):
        # The event name is code-chosen; a non-string (or a CustomerData,
        # already rendered to the marker above) means a call-site mistake.
        out["event"] = "unnamed_event" if event is None else _render_value(event)
    if dropped:
        out["dropped_keys"] = dropped
    return out


class _FailClosed:
    """Runs the inner processors; on any failure replaces the event with a
    fixed record, so a broken processor can never print the raw event."""

    def __init__(self, processors: list[Any]) -> None:
        self._processors = processors

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        try:
            for processor in self._processors:
                event_dict = processor(logger, method_name, event_dict)
            return event_dict
        except Exception as exc:  # fail closed: any processor failure drops the event
            return {
                "event": "log_pipeline_error",
                "level": "error",
                "error_type": type(exc).__name__,
            }


class _MetadataOnlyHandler(logging.Handler):
    """Forwards standard-library log records as name + level, without text."""

    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger("stdlib").log(
            record.levelno, "stdlib_log", logger=record.name, state=record.levelname
        )


_LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _CurrentStderr(io.TextIOBase):
    """Writes to whatever ``sys.stderr`` is at write time, so replacing it
    after configuration (as test runners and daemons do) is honoured."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR: Final = cast(TextIO, _CurrentStderr())


def _configure_structlog(stream: TextIO | None, level: str) -> None:
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {sorted(_LEVELS)}")
    inner = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _exception_to_type_and_location,
        _allowlist,
    ]
    structlog.configure(
        processors=[
            _FailClosed(inner),
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream or _STDERR),
        cache_logger_on_first_use=False,
    )


def configure_logging(stream: TextIO | None = None, level: str = "info") -> None:
    """Install the fail-closed JSON-lines pipeline for this process, and
    reduce standard-library logging to metadata.

    ``stream`` defaults to standard error. Tests pass a ``StringIO`` and
    search it for canary strings. Processes (node daemon, simulator, CLIs)
    call this once at start; merely importing this module already routes
    structlog through the same pipeline, but leaves the standard-library
    root logger of a host application alone.
    """
    _configure_structlog(stream, level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_MetadataOnlyHandler())
    root.setLevel(logging.WARNING)


def get_logger(component: str) -> Any:
    """A logger bound to ``component`` (e.g. ``"scheduler"``).

    The logger is a lazy proxy: each call resolves the configuration in
    force *then*, so module-level loggers created at import time still go
    through whatever :func:`configure_logging` installed later.
    """
    return structlog.get_logger(component=component)


# Until a process calls configure_logging, log through the same fail-closed
# pipeline to standard error rather than structlog's developer defaults
# (which render every key and exception text).
_configure_structlog(None, "info")
