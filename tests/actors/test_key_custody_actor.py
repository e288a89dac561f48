"""The key-custody actor under a supervisor: challenges, grants, imports and
denials as ``keys.*`` messages, and restarts.

Real release, measured boot on simulated NitroTPMs, the real verifier and the
real vault (``tests/_custody_kit.py``); every message crosses the wire codec
(``protocol.messages``) both ways, as it would on a node link. The peer of
each request is the requesting node's static key, which on a node the link
adapter takes from the channel's handshake. Scenarios run on both drivers
(trio and the simulation kernel, with the simulator's inline run-blocking
seam), and once on trio with real worker threads, as a node runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
import trio
from _custody_kit import MODEL, CustodyCloud, new_key_pair

from actors import (
    ActorCrashed,
    ActorRef,
    ActorSystem,
    ChildSpec,
    Supervisor,
    WhichChildren,
    open_actor_system,
)
from actors.attestation import RunBlocking, run_inline
from actors.key_custody import FromPeer, KeyCustodyActor
from actors.seams.tpm import TPM
from nodes.clock import TrioClock
from nodes.random import SystemRandom
from protocol.key_custody import (
    Challenge,
    ChallengeRequest,
    DataKeyGrant,
    DataKeyImport,
    DataKeyImported,
    DataKeyRequest,
    Denial,
    KeyDenied,
    seal_data_key_import,
)
from protocol.messages import Envelope, ErrorCode, ErrorReply, decode_envelope, encode_envelope
from protocol.sealed_model import DATA_KEY_SIZE, SealedModelHeader

DATA_KEY = bytes(range(DATA_KEY_SIZE))


class CrashingTPM:
    """The keys node's TPM, whose unseal fails with an error the vault does not
    expect (not a ``TPMError``) while :attr:`crash` is set: a crash in the seam."""

    def __init__(self, tpm: TPM) -> None:
        self._tpm = tpm
        self.crash = False

    def unseal(self, blob: bytes) -> bytes:
        if self.crash:
            raise RuntimeError("TPM device fell over")
        return self._tpm.unseal(blob)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tpm, name)


def _wire(message: object) -> object:
    """``message`` after a trip through the envelope codec."""
    return decode_envelope(encode_envelope(Envelope.wrap(message, request_id=1))).body


async def _ask(ref: ActorRef, peer: bytes, request: object) -> object:
    """``request`` from ``peer`` as a link adapter hands it in, and the reply as sent."""
    decoded = _wire(request)
    assert isinstance(decoded, ChallengeRequest | DataKeyRequest | DataKeyImport)
    return _wire(await ref.ask(FromPeer(peer, decoded), 10.0))


async def _custody_ref(system: ActorSystem, supervisor: ActorRef) -> ActorRef:
    children = dict(await supervisor.ask(WhichChildren(), 5.0))
    ref = children["key_custody"]
    assert ref is not None
    assert await system.wait_started(ref)
    return ref


def _supervised(
    system: ActorSystem, open_vault: Callable[[], Any], run_blocking: RunBlocking
) -> ActorRef:
    spec = ChildSpec(
        "key_custody", lambda: KeyCustodyActor(open_vault, run_blocking), name="key_custody"
    )
    return system.spawn(Supervisor([spec], intensity=5, period=60.0))


def _import(cloud: CustodyCloud, *, version: int = 1) -> DataKeyImport:
    return seal_data_key_import(
        MODEL,
        DATA_KEY,
        cloud.keys_static,
        SystemRandom().token_bytes,
        provider=cloud.provider,
        key_version=version,
    )


def _held_key(custody: Any, version: int = 1) -> bytes:
    key: bytes = custody.data_key_for(SealedModelHeader(MODEL, version, 1 << 16, bytes(8)))
    return key


def _grant_scenario(cloud: CustodyCloud, run_blocking: RunBlocking) -> Callable[..., Any]:
    tpm, custody = cloud.inference_node("inference-1")

    async def scenario(system: ActorSystem) -> None:
        supervisor = _supervised(system, lambda: cloud.open_vault(cloud.stored[-1]), run_blocking)
        assert await system.wait_started(supervisor)
        keys = await _custody_ref(system, supervisor)
        provider_channel = cloud.provider.public
        assert await _ask(keys, provider_channel, _import(cloud)) == DataKeyImported(MODEL, 1)

        challenge = await _ask(keys, custody.static_public, ChallengeRequest())
        assert isinstance(challenge, Challenge)
        request = custody.data_key_request(tpm, challenge=challenge.nonce, model_id=MODEL)
        grant = await _ask(keys, custody.static_public, request)
        assert isinstance(grant, DataKeyGrant)
        assert DATA_KEY not in encode_envelope(Envelope.wrap(grant))
        assert custody.accept_grant(request, grant, keys_node_static=cloud.keys_static) == 1
        assert _held_key(custody) == DATA_KEY

    return scenario


def test_a_node_asks_a_challenge_attests_and_opens_its_grant(run_actors, tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    run_actors(_grant_scenario(cloud, run_inline))


def test_on_a_node_the_vault_runs_in_worker_threads(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    scenario = _grant_scenario(cloud, anyio.to_thread.run_sync)

    async def main() -> None:
        async with open_actor_system(
            "t", random=SystemRandom(), clock=TrioClock(), shutdown_timeout=1.0
        ) as system:
            await scenario(system)

    trio.run(main)


def test_bad_requests_are_denied_by_check_and_the_actor_keeps_serving(
    run_actors, tmp_path: Path
) -> None:
    cloud = CustodyCloud(tmp_path)
    tpm, custody = cloud.inference_node("inference-1")
    other_tpm, other = cloud.inference_node("inference-2")
    attacker = new_key_pair()

    async def scenario(system: ActorSystem) -> None:
        supervisor = _supervised(system, lambda: cloud.open_vault(cloud.stored[-1]), run_inline)
        assert await system.wait_started(supervisor)
        keys = await _custody_ref(system, supervisor)
        # An import sealed by anyone but the model's provider.
        forged = seal_data_key_import(
            MODEL, DATA_KEY, cloud.keys_static, SystemRandom().token_bytes, provider=attacker
        )
        assert await _ask(keys, attacker.public, forged) == KeyDenied(Denial.UNAUTHENTICATED_SENDER)
        genuine = _import(cloud)
        assert await _ask(keys, cloud.provider.public, genuine) == DataKeyImported(MODEL, 1)
        # The same authentic import again: no version the model already has.
        assert await _ask(keys, cloud.provider.public, genuine) == ErrorReply(
            ErrorCode.BAD_REQUEST, False
        )

        # A challenge issued to one peer, spent by another.
        issued = await _ask(keys, other.static_public, ChallengeRequest())
        assert isinstance(issued, Challenge)
        stolen = custody.data_key_request(tpm, challenge=issued.nonce, model_id=MODEL)
        assert await _ask(keys, custody.static_public, stolen) == KeyDenied(
            Denial.UNKNOWN_CHALLENGE
        )
        # A document binding another key than the one the grant would go to.
        mine = await _ask(keys, custody.static_public, ChallengeRequest())
        assert isinstance(mine, Challenge)
        rebound = replace(
            custody.data_key_request(tpm, challenge=mine.nonce, model_id=MODEL),
            static_public=attacker.public,
        )
        denied = await _ask(keys, custody.static_public, rebound)
        assert isinstance(denied, KeyDenied)
        assert denied.denial is Denial.ATTESTATION
        assert denied.attestation_check is not None
        # A peer that is not a 32-byte key (what no channel hands in).
        assert _wire(await keys.ask(FromPeer(b"short", ChallengeRequest()), 10.0)) == KeyDenied(
            Denial.MALFORMED
        )

        # Still serving: the other node gets its key.
        fresh = await _ask(keys, other.static_public, ChallengeRequest())
        assert isinstance(fresh, Challenge)
        request = other.data_key_request(other_tpm, challenge=fresh.nonce, model_id=MODEL)
        grant = await _ask(keys, other.static_public, request)
        assert isinstance(grant, DataKeyGrant)
        other.accept_grant(request, grant, keys_node_static=cloud.keys_static)
        assert _held_key(other) == DATA_KEY
        assert not custody.has_data_key(MODEL, 1)

    run_actors(scenario)


def test_a_crash_in_the_tpm_seam_restarts_the_actor_and_it_keeps_serving(
    run_actors, tmp_path: Path
) -> None:
    cloud = CustodyCloud(tmp_path)
    tpm, custody = cloud.inference_node("inference-1")
    keys_tpm = CrashingTPM(cloud.keys_tpm)
    opened: list[int] = []

    def open_vault() -> Any:
        opened.append(len(cloud.stored))
        return cloud.open_vault(cloud.stored[-1], tpm=keys_tpm)  # type: ignore[arg-type]

    async def scenario(system: ActorSystem) -> None:
        supervisor = _supervised(system, open_vault, run_inline)
        assert await system.wait_started(supervisor)
        first = await _custody_ref(system, supervisor)
        assert await _ask(first, cloud.provider.public, _import(cloud)) == DataKeyImported(MODEL, 1)
        challenge = await _ask(first, custody.static_public, ChallengeRequest())
        assert isinstance(challenge, Challenge)
        request = custody.data_key_request(tpm, challenge=challenge.nonce, model_id=MODEL)

        keys_tpm.crash = True
        with pytest.raises(ActorCrashed):
            await first.ask(FromPeer(custody.static_public, request), 10.0)
        keys_tpm.crash = False

        restarted = await _custody_ref(system, supervisor)
        assert restarted != first
        # The restarted vault opened the newest keyring (holding the import)
        # with a new challenge key: a challenge issued before is refused.
        assert len(opened) == 2
        retry = custody.data_key_request(tpm, challenge=challenge.nonce, model_id=MODEL)
        assert await _ask(restarted, custody.static_public, retry) == KeyDenied(
            Denial.UNKNOWN_CHALLENGE
        )
        again = await _ask(restarted, custody.static_public, ChallengeRequest())
        assert isinstance(again, Challenge)
        request = custody.data_key_request(tpm, challenge=again.nonce, model_id=MODEL)
        grant = await _ask(restarted, custody.static_public, request)
        assert isinstance(grant, DataKeyGrant)
        custody.accept_grant(request, grant, keys_node_static=cloud.keys_static)
        assert _held_key(custody) == DATA_KEY

    run_actors(scenario)


def test_the_key_custody_messages_are_registered_and_carry_no_peer() -> None:
    for message in (ChallengeRequest(), Challenge(bytes(32)), KeyDenied(Denial.NO_POLICY)):
        assert _wire(message) == message
    # Who asks is the channel's to say, never the request's.
    assert not hasattr(ChallengeRequest(), "peer")
