"""Bounded HTTP reads for the client's verification fetches.

Every answer the client reads before it trusts anything is read up to a cap
and no further, uncompressed, without following redirects, within a deadline
for the whole exchange (a server dripping bytes never trips a per-read
timeout). Verification fetches are idempotent GETs: a transport failure or a
502/503/504 is retried a few times with a short backoff; generation never is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import anyio
import httpx2

from mantle._errors import APIError, ClientTimeout, RateLimited

#: Statuses worth another try of an idempotent fetch.
RETRYABLE_STATUSES: Final = frozenset({502, 503, 504})
DEFAULT_RETRIES: Final = 2
_BACKOFF_S: Final = 0.2
#: Cap on an error body read to build an :class:`~mantle.APIError`.
MAX_ERROR_BODY_BYTES: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    #: ``None``: larger than the cap, or content-encoded.
    body: bytes | None


async def read_capped(response: httpx2.Response, cap: int) -> bytes | None:
    """The body of ``response`` if it is identity-encoded and at most ``cap`` bytes."""
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > cap:
            return None
    return bytes(body)


async def _get_once(
    http: httpx2.AsyncClient,
    url: str,
    params: Mapping[str, str] | None,
    headers: Mapping[str, str],
    cap: int,
) -> Answer:
    async with http.stream(
        "GET",
        url,
        params=dict(params or {}),
        headers={"Accept-Encoding": "identity", **headers},
        follow_redirects=False,
    ) as response:
        limit = cap if response.status_code == 200 else MAX_ERROR_BODY_BYTES
        body = await read_capped(response, limit)
        return Answer(response.status_code, dict(response.headers), body)


async def get_bounded(
    http: httpx2.AsyncClient,
    url: str,
    *,
    step: str,
    cap: int,
    deadline_s: float,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    retries: int = DEFAULT_RETRIES,
) -> Answer:
    """GET ``url`` (an idempotent verification fetch), retried on transport
    errors and 502/503/504, all within ``deadline_s``; :class:`ClientTimeout`
    naming ``step`` past it. A last transport error propagates as httpx2's."""
    answer: Answer | None = None
    with anyio.move_on_after(deadline_s):
        for attempt in range(retries + 1):
            last = attempt == retries
            try:
                answer = await _get_once(http, url, params, headers or {}, cap)
            except httpx2.TransportError:
                if last:
                    raise
                answer = None
            if answer is not None and (answer.status not in RETRYABLE_STATUSES or last):
                break
            await anyio.sleep(_BACKOFF_S * (attempt + 1))
    if answer is None:
        raise ClientTimeout(step)
    return answer


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (delta form), or ``None`` when absent or not a number."""
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    if value is None or not value.strip().isdigit() or len(value) > 10:
        return None
    return float(int(value.strip()))


def api_error_of(status: int, headers: Mapping[str, str], body: bytes | None) -> APIError:
    """The typed error of a refusal: :class:`RateLimited` for 429, else
    :class:`APIError` from the OpenAI error body (its fields when they are
    strings; a generic message otherwise)."""
    fields: dict[str, str | None] = {"type": None, "param": None, "code": None}
    message = f"the ingress answered HTTP {status}"
    parsed: object = None
    if body:
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        if isinstance(error.get("message"), str):
            message = error["message"][:1024]
        for name in fields:
            value = error.get(name)
            fields[name] = value[:256] if isinstance(value, str) else None
    if status == 429:
        return RateLimited(message, retry_after_of(headers), **fields)
    return APIError(status, message, **fields)
