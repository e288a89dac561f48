"""The official SDK on a verified ingress: :func:`openai_client`, :func:`async_openai_client`.

For code that must keep using ``openai.OpenAI``: the release is verified
against the pins (with the log's tree head, consistent with the trust state
on disk), the ingress with :func:`mantle.verify_ingress` (its document over
a fresh nonce, the release's PCRs, binding the pinned certificate's key), and
only then is an SDK client returned whose ``httpx2`` transport trusts that
one certificate. Prompts on this path are plaintext inside the attested
ingress (docs/architecture.md §14); the end-to-end path is
:class:`mantle.Client`.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import anyio.from_thread
import httpx2
import openai

from actors.seams.clock import WallClock
from actors.seams.random import Random
from mantle._config import PinSource, load_settings
from mantle._errors import ClientConfigError
from mantle._ingress import DEFAULT_DEADLINE_S, VerifiedIngress, pinned_tls_context, verify_ingress
from mantle._seams import SystemClock, SystemRandom
from mantle._walk import TrustWalk
from mantle.trust_state import TrustStateFile


async def _verified_ingress(
    url: str | None,
    api_key: str | None,
    *,
    attestation_root: PinSource | None,
    release_root: PinSource | None,
    tlog_key: PinSource | None,
    tls_cert: PinSource | None,
    trust_state: str | os.PathLike[str] | None,
    config_file: str | os.PathLike[str] | None,
    clock: WallClock | None,
    random: Random | None,
    deadline_s: float,
) -> tuple[str, str, bytes, VerifiedIngress]:
    settings = load_settings(
        url=url,
        api_key=api_key,
        attestation_root=attestation_root,
        release_root=release_root,
        tlog_key=tlog_key,
        tls_cert=tls_cert,
        trust_state=trust_state,
        config_file=config_file,
    )
    cert = settings.tls_cert_pem
    if cert is None:
        # The SDK's transport pins the attested certificate: there must be one.
        raise ClientConfigError("tls_cert", "the ingress's certificate is required here")
    wall: WallClock = clock if clock is not None else SystemClock()
    draw: Random = random if random is not None else SystemRandom()
    async with httpx2.AsyncClient(
        verify=pinned_tls_context(cert), timeout=deadline_s, follow_redirects=False
    ) as http:
        walk = TrustWalk(
            http,
            settings.url,
            api_key=settings.api_key,
            pins=settings.pins,
            state=TrustStateFile(settings.trust_state),
            random=draw,
            clock=wall,
            deadline_s=deadline_s,
        )
        release, head, checked = await walk.release()
        verified = await verify_ingress(
            http,
            settings.url,
            pins=settings.pins,
            release=release,
            tls_cert_pem=cert,
            random=draw,
            clock=wall,
            deadline_s=deadline_s,
        )
        await walk.store(release, head, checked)
    return settings.url, settings.api_key, cert, verified


async def async_openai_client(
    url: str | None = None,
    api_key: str | None = None,
    *,
    attestation_root: PinSource | None = None,
    release_root: PinSource | None = None,
    tlog_key: PinSource | None = None,
    tls_cert: PinSource | None = None,
    trust_state: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    clock: WallClock | None = None,
    random: Random | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
    **sdk_options: Any,
) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` for the ingress at ``url``, returned once it
    verified (see the module docstring); ``sdk_options`` go to the SDK."""
    base, key, cert, _ = await _verified_ingress(
        url,
        api_key,
        attestation_root=attestation_root,
        release_root=release_root,
        tlog_key=tlog_key,
        tls_cert=tls_cert,
        trust_state=trust_state,
        config_file=config_file,
        clock=clock,
        random=random,
        deadline_s=deadline_s,
    )
    return openai.AsyncOpenAI(
        base_url=base + "/v1",
        api_key=key,
        http_client=httpx2.AsyncClient(verify=pinned_tls_context(cert), follow_redirects=False),
        **sdk_options,
    )


def openai_client(
    url: str | None = None,
    api_key: str | None = None,
    *,
    attestation_root: PinSource | None = None,
    release_root: PinSource | None = None,
    tlog_key: PinSource | None = None,
    tls_cert: PinSource | None = None,
    trust_state: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    clock: WallClock | None = None,
    random: Random | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
    **sdk_options: Any,
) -> openai.OpenAI:
    """An ``openai.OpenAI`` for the ingress at ``url``, returned once it
    verified (see the module docstring); ``sdk_options`` go to the SDK."""

    async def verify() -> tuple[str, str, bytes, VerifiedIngress]:
        return await _verified_ingress(
            url,
            api_key,
            attestation_root=attestation_root,
            release_root=release_root,
            tlog_key=tlog_key,
            tls_cert=tls_cert,
            trust_state=trust_state,
            config_file=config_file,
            clock=clock,
            random=random,
            deadline_s=deadline_s,
        )

    # A loop of its own in a thread: callable from code that runs one already.
    with anyio.from_thread.start_blocking_portal() as portal:
        base, key, cert, _ = portal.call(verify)
    return openai.OpenAI(
        base_url=base + "/v1",
        api_key=key,
        http_client=httpx2.Client(verify=pinned_tls_context(cert), follow_redirects=False),
        **sdk_options,
    )
