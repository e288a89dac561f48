"""The attestation service: attest over a requester's nonce, a cached
timestamp-only document kept within its freshness window by a timer that
runs on the Clock seam, on trio and on the simulator alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from actors import Actor, ActorSystem, Context
from actors.attestation import (
    AttestationService,
    AttestationUnavailable,
    Evidence,
    PeerAttestationVerifier,
    run_inline,
)
from actors.key_custody import KeyringError, NodeKeyCustody
from actors.seams.clock import Clock
from nodes.random import SystemRandom
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    PcrPolicy,
    PcrRelease,
    StaleEvidence,
    TrustAnchor,
    noise_key_binding,
    unverified_payload,
)
from protocol.e2e import receipt_key_binding, verify_receipt
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM, TpmOp

PKI = SimulatedNitroPKI("attestation-service")
VERIFIER = AttestationVerifier([NitroAuthenticator(TrustAnchor.from_der(PKI.root_der))])
START_MS = 1_900_000_000_000


def _service(
    clock: Clock, *, kind: DocumentKind = DocumentKind.NITRO, **window: Any
) -> tuple[AttestationService, SimulatedNitroTPM, NodeKeyCustody]:
    tpm = SimulatedNitroTPM(seed="service", pki=PKI, clock=clock)
    custody = NodeKeyCustody(random=SystemRandom())
    service = AttestationService(
        tpm=tpm, custody=custody, kind=kind, clock=clock, run_blocking=run_inline, **window
    )
    return service, tpm, custody


def _policy(tpm: SimulatedNitroTPM) -> PcrPolicy:
    # Every register as it is now: a measured policy pins the platform and the
    # application registers (peer verifiers refuse anything less).
    return PcrPolicy(
        releases=(
            PcrRelease.from_mapping("now", {index: tpm.pcr_read(index) for index in range(24)}),
        )
    )


@pytest.mark.anyio
async def test_attest_binds_the_requesters_nonce_and_this_nodes_key() -> None:
    clock = ManualClock(START_MS)
    service, tpm, custody = _service(clock)
    nonce = bytes(range(32))
    evidence = await service.attest(nonce)
    verified = PeerAttestationVerifier(verifier=VERIFIER, policy=_policy(tpm), clock=clock)(
        custody.static_public, evidence, nonce
    )
    assert verified.public_key == custody.key_binding
    with pytest.raises(StaleEvidence):
        PeerAttestationVerifier(verifier=VERIFIER, policy=_policy(tpm), clock=clock)(
            custody.static_public, evidence, bytes(32)
        )
    for bad in (b"", bytes(15), bytes(65)):
        with pytest.raises(ValueError):
            await service.attest(bad)
    tpm.inject_failure(TpmOp.ATTEST)
    with pytest.raises(AttestationUnavailable) as unavailable:
        await service.attest(nonce)
    assert unavailable.value.check == "tpm"


@pytest.mark.anyio
async def test_the_cached_document_is_handed_out_only_within_its_window() -> None:
    clock = ManualClock(START_MS)
    service, _, _ = _service(clock, max_age_ms=3_000, refresh_interval_s=1.0)
    with pytest.raises(AttestationUnavailable):
        service.cached()  # nothing attested yet
    document = await service.refresh()
    assert unverified_payload(document.document)["nonce"] is None
    clock.advance(2.0)  # the window minus one refresh interval
    assert service.cached() == document
    clock.advance(0.01)
    with pytest.raises(AttestationUnavailable) as stale:
        service.cached()  # a verifier two seconds away could see it expire
    assert stale.value.check == "cache.stale"


def test_the_refresh_interval_must_lie_within_the_window() -> None:
    for interval in (0.0, 3.0, 5.0):
        with pytest.raises(ValueError):
            _service(ManualClock(START_MS), max_age_ms=3_000, refresh_interval_s=interval)


@pytest.mark.anyio
async def test_a_quote_kind_has_no_cached_document() -> None:
    service, _, _ = _service(ManualClock(START_MS), kind=DocumentKind.TPM2_QUOTE)
    with pytest.raises(AttestationUnavailable) as no_time:
        service.cached()
    assert no_time.value.check == "kind.no_timestamp"
    await service.run()  # nothing to keep fresh: returns at once


class _Refresher(Actor):
    """Hosts the service's timer loop, as a node's supervisor would."""

    def __init__(self, service: AttestationService) -> None:
        self.service = service

    async def started(self, ctx: Context) -> None:
        await self.service.run()


def test_the_timer_keeps_the_cached_document_fresh(
    run_actors: Callable[[Callable[[ActorSystem], Any]], Any],
) -> None:
    """Same scenario on trio and on the simulator's virtual time."""

    async def scenario(system: ActorSystem) -> tuple[int, bool]:
        clock = system.clock
        service, tpm, custody = _service(clock, max_age_ms=300, refresh_interval_s=0.1)
        system.spawn(_Refresher(service))
        await clock.sleep(0.01)
        first = service.cached()
        await clock.sleep(0.45)
        latest: Evidence = service.cached()
        # The document in hand is always young enough for a verifier that
        # allows the window.
        VERIFIER.verify(
            latest.document,
            kind=latest.kind,
            expectations=Expectations(
                pcr_policy=_policy(tpm),
                max_age_ms=300,
                expected_public_key=noise_key_binding(custody.static_public),
            ),
            now_ms=clock.wall_ms(),
        )
        # A TPM that stops answering: the cache is not handed out past its window.
        tpm.inject_failure(TpmOp.ATTEST, times=1_000)
        await clock.sleep(0.35)
        try:
            service.cached()
        except AttestationUnavailable:
            refused = True
        else:
            refused = False
        return service.attestations, refused and latest != first

    attestations, fails_closed = run_actors(scenario)
    assert attestations >= 4
    assert fails_closed


# -- client-channel proofs ---------------------------------------------------------------


class _GatedTpm:
    """A TPM whose attest commands block until the test releases them, and
    which records how many ran at once and in which order they were asked."""

    def __init__(self, tpm: SimulatedNitroTPM) -> None:
        self._tpm = tpm
        self.running = 0
        self.most_at_once = 0
        self.order: list[bytes | None] = []
        self.release = trio.Event()

    async def run_blocking(self, function: Callable[[], Any]) -> Any:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.release.wait()
            return function()
        finally:
            self.running -= 1

    def attest(self, **fields: Any) -> bytes:
        self.order.append(fields["nonce"])
        return self._tpm.attest(**fields)

    def __getattr__(self, name: str) -> object:
        return getattr(self._tpm, name)


@pytest.mark.anyio
async def test_client_channel_proofs_run_one_at_a_time_behind_priority_requests() -> None:
    clock = ManualClock(START_MS)
    gated = _GatedTpm(SimulatedNitroTPM(seed="service", pki=PKI, clock=clock))
    service = AttestationService(
        tpm=gated,  # type: ignore[arg-type]
        custody=NodeKeyCustody(random=SystemRandom()),
        kind=DocumentKind.NITRO,
        clock=clock,
        run_blocking=gated.run_blocking,
    )
    clients = [bytes([index]) * 32 for index in range(4)]
    link = b"\xff" * 32
    async with trio.open_nursery() as nursery:
        for nonce in clients:
            nursery.start_soon(service.attest_client_channel, nonce)
        await trio.testing.wait_all_tasks_blocked()
        assert gated.running == 1  # one client proof at the TPM, the rest wait
        nursery.start_soon(service.attest, link)
        await trio.testing.wait_all_tasks_blocked()
        assert gated.running == 2  # the priority request does not wait for them
        gated.release.set()
    assert gated.most_at_once == 2
    # The link's proof went ahead of every client proof still queued: only the
    # one already at the TPM may have run before it.
    assert gated.order.index(link) <= 1
    assert sorted(gated.order) == sorted([*clients, link])
    assert service.attestations == 5


def test_at_least_one_client_proof_can_run() -> None:
    with pytest.raises(ValueError):
        _service(ManualClock(START_MS), max_concurrent_client_proofs=0)


@pytest.mark.anyio
async def test_client_path_documents_carry_the_callers_user_data() -> None:
    # The ingress binds its TLS key here: a client verifying the document
    # compares it with the certificate it was shown.
    clock = ManualClock(START_MS)
    service, _tpm, custody = _service(clock)
    nonce, binding = bytes(range(32)), bytes(range(100, 132))
    evidence = await service.attest_client_channel(nonce, user_data=binding)
    payload = unverified_payload(evidence.document)
    assert payload["user_data"] == binding and payload["nonce"] == nonce
    assert payload["public_key"] == custody.key_binding
    plain = unverified_payload((await service.attest_client_channel(nonce)).document)
    assert plain["user_data"] is None
    for bad in (b"x" * 513, "text"):
        with pytest.raises(ValueError):
            await service.attest_client_channel(nonce, user_data=bad)  # type: ignore[arg-type]
    assert service.attestations == 2


def test_an_inference_nodes_documents_bind_its_receipt_key_on_every_path() -> None:
    """The priority path (node links), the client path (clients' nonces) and
    the cached document all carry the receipt key's binding as user data; a
    caller naming its own user data (the ingress's TLS key) keeps it, and a
    node without a receipt key binds none."""
    clock = ManualClock(START_MS)
    tpm = SimulatedNitroTPM(seed="receipts", pki=PKI, clock=clock)
    custody = NodeKeyCustody(random=SystemRandom(), receipt_key=True)
    service = AttestationService(
        tpm=tpm, custody=custody, kind=DocumentKind.NITRO, clock=clock, run_blocking=run_inline
    )
    assert custody.receipt_public is not None
    binding = receipt_key_binding(custody.receipt_public)
    nonce = bytes(range(32))

    async def main() -> list[bytes]:
        return [
            (await service.attest(nonce)).document,
            (await service.attest_client_channel(nonce)).document,
            (await service.refresh()).document,
            (await service.attest_client_channel(nonce, user_data=b"tls")).document,
        ]

    linked, client, cached, tls = trio.run(main)
    for document in (linked, client, cached):
        assert unverified_payload(document)["user_data"] == binding
    assert unverified_payload(tls)["user_data"] == b"tls"
    plain = NodeKeyCustody(random=SystemRandom())
    assert plain.receipt_key_binding is None
    assert unverified_payload(plain.attest(tpm, nonce=nonce))["user_data"] in (None, b"")


def test_receipts_are_signed_by_the_custodys_receipt_key_only() -> None:
    custody = NodeKeyCustody(random=SystemRandom(), receipt_key=True)
    fields = {
        "request_id": bytes(16),
        "request_sha256": bytes(32),
        "response_sha256": b"\x01" * 32,
        "model": "m",
        "model_sha384": bytes(48),
        "release_version": 2,
    }
    receipt = custody.sign_receipt(**fields)  # type: ignore[arg-type]
    assert receipt.receipt_key == custody.receipt_public
    verify_receipt(receipt, request_sha256=bytes(32), response_sha256=b"\x01" * 32)
    with pytest.raises(KeyringError):
        NodeKeyCustody(random=SystemRandom()).sign_receipt(**fields)  # type: ignore[arg-type]
