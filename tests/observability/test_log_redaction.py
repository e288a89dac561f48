"""Customer data never reaches log output (invariant I2).

Each test plants a canary string inside customer data (or in an exception
message, or under an unlisted key) and searches everything the pipeline wrote.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from actors.log import ALLOWED_KEYS, configure_logging, exception_summary, get_logger
from protocol.customer_data import REDACTED, CustomerData

CANARY = "CANARY-7f3a9c-do-not-log"


@pytest.fixture
def captured() -> io.StringIO:
    out = io.StringIO()
    configure_logging(out, level="debug")
    return out


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line]


def test_customer_data_renders_as_marker_everywhere() -> None:
    data = CustomerData(CANARY)
    old_style = "%s" % data  # noqa: UP031 - the %-operator must redact too
    for rendered in (repr(data), str(data), f"{data}", f"{data!r}", old_style, f"{data:>40}"):
        assert CANARY not in rendered
        assert REDACTED in rendered
    assert data.reveal_text() == CANARY
    assert CustomerData(CANARY.encode()).reveal_text() == CANARY
    assert CANARY not in repr([data, {"k": data}, (data,)])


def test_customer_data_refuses_pickling_and_hashing() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(CustomerData(CANARY))
    with pytest.raises(TypeError):
        hash(CustomerData(CANARY))
    with pytest.raises(TypeError):
        bytes(CustomerData(CANARY))  # type: ignore[call-overload]
    assert copy.deepcopy(CustomerData(CANARY)) == CustomerData(CANARY)
    with pytest.raises(AttributeError):
        CustomerData(CANARY)._value = "x"  # type: ignore[misc]


def test_customer_data_under_an_allowed_key_is_redacted(captured: io.StringIO) -> None:
    get_logger("test").info("request_done", reason=CustomerData(CANARY), size=12)
    assert CANARY not in captured.getvalue()
    (line,) = _lines(captured)
    assert line["reason"] == REDACTED
    assert line["size"] == 12
    assert line["event"] == "request_done"
    assert line["component"] == "test"


def test_unlisted_keys_are_dropped_and_counted(captured: io.StringIO) -> None:
    get_logger("test").info("oops", prompt=CANARY, body={"text": CANARY})
    assert CANARY not in captured.getvalue()
    (line,) = _lines(captured)
    assert line["dropped_keys"] == 2
    assert "prompt" not in line and "body" not in line


def test_unknown_value_types_render_by_type_name(captured: io.StringIO) -> None:
    class Holder:
        def __repr__(self) -> str:
            return CANARY

    get_logger("test").info("odd", reason=Holder(), state={"nested": CANARY})
    text = captured.getvalue()
    assert CANARY not in text
    (line,) = _lines(captured)
    assert line["reason"] == "<unloggable:Holder>"
    assert line["state"] == "<unloggable:dict>"


def test_exceptions_are_logged_by_type_and_location_only(captured: io.StringIO) -> None:
    log = get_logger("test")
    try:
        raise ValueError(f"bad prompt {CANARY}")
    except ValueError:
        log.exception("generation_failed")
    try:
        raise RuntimeError(CANARY)
    except RuntimeError as exc:
        log.error("generation_failed", exc_info=exc)
    assert CANARY not in captured.getvalue()
    first, second = _lines(captured)
    assert first["error_type"] == "ValueError"
    assert str(first["error_location"]).startswith("test_log_redaction.py:")
    assert second["error_type"] == "RuntimeError"


def test_event_name_that_is_customer_data_is_redacted(captured: io.StringIO) -> None:
    get_logger("test").info(CustomerData(CANARY))
    assert CANARY not in captured.getvalue()
    (line,) = _lines(captured)
    assert line["event"] == REDACTED


def test_stdlib_records_keep_only_name_and_level(captured: io.StringIO) -> None:
    logging.getLogger("hypercorn.error").warning("client sent %s", CANARY)
    logging.getLogger("thirdparty").error(CANARY)
    assert CANARY not in captured.getvalue()
    lines = _lines(captured)
    assert [line["logger"] for line in lines] == ["hypercorn.error", "thirdparty"]
    assert all(line["event"] == "stdlib_log" for line in lines)


def test_pipeline_fails_closed_when_a_value_misbehaves(captured: io.StringIO) -> None:
    class Exploding(str):
        def __len__(self) -> int:
            raise RuntimeError(CANARY)

    get_logger("test").info("x", reason=Exploding(CANARY))
    text = captured.getvalue()
    assert CANARY not in text
    (line,) = _lines(captured)
    assert line == {"event": "log_pipeline_error", "level": "error", "error_type": "RuntimeError"}


def test_exception_summary_has_no_message() -> None:
    try:
        raise KeyError(CANARY)
    except KeyError as exc:
        summary = exception_summary(exc)
    assert CANARY not in json.dumps(summary)
    assert summary["error_type"] == "KeyError"


def test_allowlist_is_a_closed_set_of_metadata_names() -> None:
    # Guard against someone allowlisting a content-bearing key.
    for forbidden in ("prompt", "completion", "messages", "content", "body", "text", "input"):
        assert forbidden not in ALLOWED_KEYS


def test_loggers_made_before_configuration_use_the_pipeline_configured_later() -> None:
    # Modules create their loggers at import time, long before a process
    # calls configure_logging; they must not keep structlog's defaults.
    early = get_logger("early")
    out = io.StringIO()
    configure_logging(out)
    early.warning("late_event", reason=CustomerData(CANARY), prompt=CANARY)
    assert CANARY not in out.getvalue()
    (line,) = _lines(out)
    assert line["component"] == "early" and line["dropped_keys"] == 1


def test_importing_the_module_alone_already_fails_closed(tmp_path: Path) -> None:
    # A fresh interpreter that never calls configure_logging.
    code = (
        "from actors.log import get_logger\n"
        "from protocol.customer_data import CustomerData\n"
        f"get_logger('x').warning('e', reason=CustomerData({CANARY!r}), prompt={CANARY!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert CANARY not in result.stdout + result.stderr
    assert result.stdout == ""
    line = json.loads(result.stderr)
    assert line["reason"] == REDACTED and line["dropped_keys"] == 1
