"""A keys node serving its vault over real TCP on loopback, and the askers' dialling.

The keys node of :class:`_custody_kit.CustodyCloud` (a real release, measured
boot on a simulated NitroTPM, the real vault) runs its
:class:`~actors.key_custody.KeyCustodyActor` under a supervisor in an actor
system and serves it with :func:`~actors.key_custody.serve_key_custody` on
``nodes.tcp.serve_secure``, proving its attestation on every channel as the
daemon wires it. Askers dial it with :func:`dial` and verify it with a
:class:`~actors.attestation.PeerAttestationVerifier` over the cluster's policy.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
import anyio.to_thread
from _custody_kit import MODEL, CustodyCloud

from actors import ActorRef, ChildSpec, Supervisor, WhichChildren, open_actor_system
from actors.attestation import Attest, AttestationService, PeerAttestationVerifier
from actors.channel import ChannelAttestation, ConnectionHandler, SecureChannel, connect_secure
from actors.key_custody import (
    MAX_KEY_MESSAGE_BYTES,
    AskCustody,
    KeyCustodyActor,
    NodeKeyCustody,
    asker_channel_attestation,
    custody_actor,
    keys_node_channel_attestation,
    serve_key_custody,
)
from actors.seams.tpm import TPM
from nodes.clock import TrioClock
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from protocol.attestation import AttestationVerifier, DocumentKind, NitroAuthenticator, TrustAnchor
from protocol.measurement import boot_extends, cluster_policy, release_measurement
from protocol.messages import Envelope
from protocol.noise import KeyPair
from simulations.nitrotpm import SimulatedNitroTPM

LOOPBACK = "127.0.0.1"
RANDOM = SystemRandom()


async def accept_anyone(remote_static: bytes, payload: bytes) -> None:
    """A keys node admits any handshake: askers prove themselves in the messages."""


def attestation_service(
    cloud: CustodyCloud, tpm: TPM, custody: NodeKeyCustody
) -> AttestationService:
    return AttestationService(
        tpm=tpm,
        custody=custody,
        kind=DocumentKind.NITRO,
        clock=cloud.wall,
        run_blocking=anyio.to_thread.run_sync,
    )


def keys_node_verifier(cloud: CustodyCloud) -> PeerAttestationVerifier:
    """How a node of the cluster verifies the keys node: the cluster's policy."""
    return PeerAttestationVerifier(
        verifier=AttestationVerifier(
            [NitroAuthenticator(TrustAnchor.from_der(cloud.pki.root_der))]
        ),
        policy=cluster_policy([cloud.release]),
        clock=cloud.wall,
    )


@dataclass
class KeysServer:
    """A keys node listening on ``port``; ``errors`` are the connections it ended."""

    port: int
    custody: ActorRef
    errors: list[Exception] = field(default_factory=list)


@asynccontextmanager
async def serving_keys_node(
    cloud: CustodyCloud,
    *,
    handler: Callable[[AskCustody], ConnectionHandler] = serve_key_custody,
    attestation: ChannelAttestation | None = None,
    static: KeyPair | None = None,
) -> AsyncIterator[KeysServer]:
    """``cloud``'s keys node serving on loopback: ``handler`` over its custody
    actor, with its exchange and key unless an impostor's are given."""
    async with (
        open_actor_system(
            "keys-1", random=RANDOM, clock=TrioClock(), shutdown_timeout=2.0
        ) as system,
        anyio.create_task_group() as servers,
    ):
        spec = ChildSpec(
            "key_custody",
            lambda: KeyCustodyActor(
                lambda: cloud.open_vault(cloud.stored[-1]), anyio.to_thread.run_sync
            ),
            name="key_custody",
        )
        supervisor = system.spawn(Supervisor([spec], intensity=5, period=60.0))
        assert await system.wait_started(supervisor)
        ref = dict(await supervisor.ask(WhichChildren(), 5.0))["key_custody"]
        assert ref is not None and await system.wait_started(ref)
        keys_attest: Attest = attestation_service(
            cloud, cloud.keys_tpm, cloud.keys_node.custody
        ).attest_client_channel
        errors: list[Exception] = []
        port = await servers.start(
            _serve,
            handler(custody_actor(ref)),
            static if static is not None else cloud.keys_node.custody.static,
            attestation if attestation is not None else keys_node_channel_attestation(keys_attest),
            errors.append,
        )
        yield KeysServer(port, ref, errors)
        servers.cancel_scope.cancel()


async def _serve(
    handler: ConnectionHandler,
    static: KeyPair,
    attestation: ChannelAttestation,
    on_error: Callable[[Exception], None],
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await serve_secure(
        LOOPBACK,
        0,
        handler,
        static=static,
        entropy=RANDOM.token_bytes,
        verify_peer=accept_anyone,
        attestation=attestation,
        max_payload=MAX_KEY_MESSAGE_BYTES,
        on_error=on_error,
        handshake_timeout=5.0,
        task_status=task_status,
    )


async def dial(
    port: int,
    static: KeyPair,
    verifier: PeerAttestationVerifier,
    *,
    prove: Attest | None = None,
) -> SecureChannel:
    """An asker's channel to the keys node on ``port``, its attestation verified."""
    stream = await anyio.connect_tcp(LOOPBACK, port)
    return await connect_secure(
        stream,
        static=static,
        entropy=RANDOM.token_bytes,
        verify_peer=accept_anyone,
        attestation=asker_channel_attestation(verifier, prove),
        max_payload=MAX_KEY_MESSAGE_BYTES,
        handshake_timeout=5.0,
    )


async def ask(channel: SecureChannel, message: object, request_id: int = 1) -> object:
    """Send ``message`` raw on ``channel`` and return the reply's body."""
    await channel.send_message(Envelope.wrap(message, request_id=request_id))
    with anyio.fail_after(10):
        reply = await channel.receive_message()
    assert reply.request_id == request_id
    return reply.body


def unlisted_release_node(
    cloud: CustodyCloud, seed: str
) -> tuple[SimulatedNitroTPM, NodeKeyCustody]:
    """A genuine machine of the cloud whose application registers show a release
    nobody logged (the model's digests, patched): its documents verify, its
    PCRs match no policy."""
    tpm = SimulatedNitroTPM(seed=seed, pki=cloud.pki, clock=cloud.wall)
    forged = release_measurement(cloud.release, MODEL)
    for index, digest in boot_extends(forged):
        tpm.pcr_extend(index, hashlib.sha384(b"patched " + digest).digest())
    return tpm, NodeKeyCustody(random=RANDOM)
