"""The attestation service: this node's one way to ask its TPM for evidence."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeVar

import anyio

from actors.attestation._evidence import AttestationUnavailable, Evidence, UnavailableCheck
from actors.key_custody import NodeKeyCustody
from actors.log import get_logger
from actors.seams.clock import Clock
from actors.seams.tpm import TPM, TPMError
from protocol.attestation import DocumentKind

_T = TypeVar("_T")

#: How old a cached (timestamp-only) document may be where a verifier checks
#: its age; the same five minutes the client and node verifiers allow.
DEFAULT_MAX_AGE_MS: Final = 5 * 60 * 1000
#: Nonces this service attests over: at least 128 bits, at most what a
#: NitroTPM document's ``nonce`` field holds comfortably in one TPM2 quote digest.
MIN_NONCE_BYTES: Final = 16
MAX_NONCE_BYTES: Final = 64
#: User data a client-path document may carry: a key binding is 32 bytes,
#: and this is well within what a NitroTPM document's ``user_data`` holds.
MAX_USER_DATA_BYTES: Final = 512
#: Client-channel proofs (:meth:`AttestationService.attest_client_channel`)
#: at the TPM at once. A TPM runs one command at a time, so more would only
#: queue inside it, where node links' answers would queue behind them.
DEFAULT_MAX_CLIENT_PROOFS: Final = 1
#: After a failed refresh, try again this soon (the cache is still within its window).
_RETRY_AFTER_S: Final = 5.0

#: Kinds whose documents carry the TPM's wall-clock time, so that a document
#: without a nonce can prove its age. A TPM 2.0 quote carries none.
_TIMESTAMPED: Final = frozenset({DocumentKind.NITRO})


class RunBlocking(Protocol):
    """Runs a blocking call for an async caller (``trio.to_thread.run_sync``)."""

    def __call__(self, function: Callable[[], _T], /) -> Awaitable[_T]: ...


async def run_inline(function: Callable[[], _T]) -> _T:
    """Run ``function`` in the calling task: for the simulator (no threads,
    its TPM answers at once) and tests; real nodes run TPM commands in a thread."""
    return function()


class AttestationService:
    """This node's attestation, against the TPM seam.

    * :meth:`attest` answers an attest request: a fresh document over the
      current PCRs binding this node's Noise key and the requester's nonce.
      Channels call it with a nonce derived from their handshake hash. It is
      the priority path, for node links and re-attestation answers: it never
      waits for client-channel proofs to drain.
    * :meth:`attest_client_channel` is the same for channels to customers'
      clients, which anyone can open: at most ``max_concurrent_client_proofs``
      of them run at once (the rest wait their turn, first come first
      served), and none starts while a priority request is in flight. A
      flood of anonymous clients therefore delays this node's own links by
      at most the client proofs already at the TPM (one, by default), never
      by the queue: their re-attestation answers cannot lapse because of it.
    * :meth:`cached` hands out a document without a nonce (freshness by
      timestamp alone, for a reader that cannot send a nonce), never older
      than ``max_age_ms - refresh_interval_s``; :meth:`run` re-attests it on
      a timer every ``refresh_interval_s`` (a third of the window by default),
      so it stays within the window its verifiers allow. Kinds without a
      timestamp (TPM 2.0 quotes) have no cached document: a nonce is their
      only freshness.

    Timers use the Clock seam and TPM commands go through ``run_blocking``,
    so the simulator drives the same code on virtual time.
    """

    def __init__(
        self,
        *,
        tpm: TPM,
        custody: NodeKeyCustody,
        kind: DocumentKind,
        clock: Clock,
        run_blocking: RunBlocking,
        max_age_ms: int = DEFAULT_MAX_AGE_MS,
        refresh_interval_s: float | None = None,
        max_concurrent_client_proofs: int = DEFAULT_MAX_CLIENT_PROOFS,
    ) -> None:
        if not isinstance(kind, DocumentKind):
            raise TypeError("kind must be a DocumentKind")
        if max_age_ms <= 0:
            raise ValueError("max_age_ms must be positive")
        interval = refresh_interval_s if refresh_interval_s is not None else max_age_ms / 3000
        if not 0 < interval * 1000 < max_age_ms:
            raise ValueError("the refresh interval must lie within the freshness window")
        if max_concurrent_client_proofs < 1:
            raise ValueError("at least one client-channel proof must be able to run")
        self._tpm = tpm
        self._custody = custody
        self._kind = kind
        self._clock = clock
        self._run_blocking = run_blocking
        self._max_age_ms = max_age_ms
        self._refresh_interval_s = interval
        self._cached: Evidence | None = None
        self._cached_at_ms = 0
        self._client_proofs = anyio.Semaphore(max_concurrent_client_proofs)
        # Priority requests in flight, and an event set whenever there are none.
        self._priority_active = 0
        self._priority_idle: anyio.Event | None = None
        self.attestations = 0  # documents produced (each is one TPM command)

    @property
    def kind(self) -> DocumentKind:
        return self._kind

    @property
    def max_age_ms(self) -> int:
        return self._max_age_ms

    @property
    def refresh_interval_s(self) -> float:
        return self._refresh_interval_s

    async def attest(self, nonce: bytes) -> Evidence:
        """A fresh document binding this node's key and ``nonce``; the
        priority path (node links, re-attestation answers)."""
        _check_nonce(nonce)
        self._priority_active += 1
        try:
            return await self._attest(nonce)
        finally:
            self._priority_active -= 1
            if self._priority_active == 0 and self._priority_idle is not None:
                self._priority_idle.set()
                self._priority_idle = None

    async def attest_client_channel(
        self, nonce: bytes, *, user_data: bytes | None = None
    ) -> Evidence:
        """Like :meth:`attest`, for a customer's client: bounded, and behind
        every priority request (see the class docstring). ``user_data`` goes
        into the document as it is (the ingress binds its TLS key there, so a
        client fetching ``/v1/attestation`` can pin the endpoint it talks to)."""
        _check_nonce(nonce)
        if user_data is not None and (
            not isinstance(user_data, bytes) or len(user_data) > MAX_USER_DATA_BYTES
        ):
            raise ValueError(f"user data is at most {MAX_USER_DATA_BYTES} bytes")
        async with self._client_proofs:
            while self._priority_active:
                if self._priority_idle is None:
                    self._priority_idle = anyio.Event()
                await self._priority_idle.wait()
            return await self._attest(nonce, user_data)

    async def _attest(self, nonce: bytes | None, user_data: bytes | None = None) -> Evidence:
        call = functools.partial(self._custody.attest, self._tpm, nonce=nonce, user_data=user_data)
        try:
            document = await self._run_blocking(call)
        except TPMError:
            # The TPM's message may describe its state; the check says enough.
            raise AttestationUnavailable(UnavailableCheck.TPM) from None
        self.attestations += 1
        return Evidence(self._kind, document)

    def cached(self) -> Evidence:
        """The timestamp-only document, while it is young enough to hand out."""
        if self._kind not in _TIMESTAMPED:
            raise AttestationUnavailable(UnavailableCheck.NO_TIMESTAMP)
        evidence = self._cached
        age_ms = self._clock.wall_ms() - self._cached_at_ms
        if evidence is None or age_ms > self._max_age_ms - self._refresh_interval_s * 1000:
            raise AttestationUnavailable(UnavailableCheck.CACHE_STALE)
        return evidence

    async def refresh(self) -> Evidence:
        """Re-attest the cached timestamp-only document now."""
        if self._kind not in _TIMESTAMPED:
            raise AttestationUnavailable(UnavailableCheck.NO_TIMESTAMP)
        produced_at = self._clock.wall_ms()
        evidence = await self._attest(None)
        self._cached, self._cached_at_ms = evidence, produced_at
        return evidence

    async def run(self) -> None:
        """Keep the cached document fresh until cancelled (returns at once for
        kinds without a timestamp, which have nothing to cache)."""
        if self._kind not in _TIMESTAMPED:
            return
        while True:
            try:
                await self.refresh()
            except AttestationUnavailable as error:
                # The cache keeps what it had; cached() stops handing it out
                # once it is too old, so a broken TPM fails closed.
                get_logger("attestation").warning("attestation_refresh_failed", check=error.check)
                await self._clock.sleep(min(_RETRY_AFTER_S, self._refresh_interval_s))
                continue
            await self._clock.sleep(self._refresh_interval_s)


def _check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, bytes) or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise ValueError(f"a nonce is {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes")
