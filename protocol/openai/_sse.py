"""Server-sent event framing (one JSON document per event, no line breaks in it)."""

from __future__ import annotations


def sse_data(payload: bytes, *, event: str | None = None) -> bytes:
    """``event: <event>\\ndata: <payload>\\n\\n``. ``payload`` is compact JSON,
    which holds no raw line break (JSON escapes them inside strings)."""
    if b"\n" in payload or b"\r" in payload:
        raise ValueError("an SSE data line cannot hold a line break")
    head = b"event: " + event.encode("ascii") + b"\n" if event is not None else b""
    return head + b"data: " + payload + b"\n\n"


def sse_done() -> bytes:
    """The chat stream's terminator."""
    return b"data: [DONE]\n\n"
