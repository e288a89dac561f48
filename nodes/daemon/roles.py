"""What each role adds to a booted node: its actors under supervision and its listeners.

Every node: an :class:`~actors.ActorSystem` on trio (``TrioClock``,
``SystemRandom``), its :class:`~actors.attestation.AttestationService` on the
TPM, a :class:`~nodes.tcp_transport.TcpNoiseTransport` whose peers are checked
by a :class:`~actors.attestation.PeerAttestationVerifier` over the cluster
policy of the booted release (``protocol.measurement.cluster_policy``), and a
:class:`~actors.remote.RemoteLayer`. Then, per role, one child supervisor
under the node's root supervisor (one_for_one):

* **keys** -- :class:`~actors.key_custody.KeyCustodyActor` (registered as
  ``key_custody``) over a :class:`~actors.key_custody.KeyVault` whose keyring
  file lives in the state directory (created on the node's first start), and
  the key-custody channel on ``[keys].listen``: this node proves its
  attestation, the requester proves itself inside ``keys.data_key_request``.
* **inference** -- the model's data key fetched from ``[inference].keys_address``
  (the keys node must attest to the cluster policy), the sealed weights opened
  in memory and checked against the release, llama.cpp loading them in a
  worker thread (or :class:`simulations.engine.ScriptedEngine` for
  ``engine = "scripted"``), then ``InferenceWorker`` (``inference``) and
  ``SchedulerMembership`` towards the scheduler node.
* **ingress** -- the scheduler actor (``scheduler``) and its dispatcher, the
  HTTPS server whose TLS key is bound into this node's attestation user data,
  the tenant key store and the transparency log read-only under ``/ct/v1/``.

The scheduler, ingress, engine and joining-link parts are their rooms' own;
this module only wires them, by the names of the cluster's interface contract.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import trio

from actors import ActorRef, ActorSystem, ChildSpec, Restart, Supervisor
from actors.attestation import AttestationService, PeerAttestationVerifier
from actors.channel import NOT_ATTESTED, ChannelAttestation, connect_secure
from actors.key_custody import KeyCustodyActor, KeyVault
from actors.log import get_logger
from actors.seams.engine import Engine
from nodes.boot import BootedNode
from nodes.clock import TrioClock
from nodes.daemon.config import EngineKind, NodeConfig
from nodes.daemon.drain import Drain, gate_connections, gate_http
from nodes.daemon.tpm import OpenedTpm, write_atomically
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.attestation import AttestationVerifier
from protocol.measurement import cluster_policy, model_artifact_name, model_policy

KEYRING_FILE: Final = "keyring"
KEY_CUSTODY_NAME: Final = "key_custody"
INFERENCE_NAME: Final = "inference"
SCHEDULER_NAME: Final = "scheduler"
#: How long the inference node waits for its data key (the keys node may start later).
DATA_KEY_TIMEOUT_S: Final = 120.0

_log = get_logger("daemon")


@dataclass
class NodeRuntime:
    """The running node's parts the roles share, and what they report."""

    config: NodeConfig
    booted: BootedNode
    opened: OpenedTpm
    system: ActorSystem
    servers: trio.Nursery
    drain: Drain
    clock: TrioClock
    random: SystemRandom
    attestation: AttestationService
    peer_verifier: PeerAttestationVerifier
    evidence_verifier: AttestationVerifier
    link_port: int | None = None
    keys_port: int | None = None
    https_port: int | None = None
    tls_cert: str | None = None
    #: Role supervisors' child specs, started under the root supervisor.
    children: list[ChildSpec] = field(default_factory=list)
    #: Actors stopped first when draining (who brings new work: the membership).
    stop_first: list[ActorRef] = field(default_factory=list)
    exit_stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


async def _accept_any_client(remote_static: bytes, payload: bytes) -> None:
    """The requester of a data key is not checked at the handshake: it proves
    its attestation inside ``keys.data_key_request``, which the vault verifies."""


def build_transport(runtime: NodeRuntime) -> TcpNoiseTransport:
    config = runtime.config
    peers = {
        # Static keys are born in memory at boot: nobody knows a peer's in
        # advance, it is admitted by its attestation (the transport's contract).
        peer.node: PeerAddress(peer.address.host, peer.address.port, None)
        for peer in config.link.peers
    }
    options: dict[str, Any] = {}
    if "ingress" in config.roles:
        # Inference nodes join the ingress node; they are not configured here.
        options["accept_joining"] = True
    return TcpNoiseTransport(
        config.node,
        static=runtime.booted.custody.static,
        random=runtime.random,
        peers=peers,
        attest=runtime.attestation.attest,
        verify_attestation=runtime.peer_verifier,
        listen_host=config.link.listen.host,
        listen_port=config.link.listen.port,
        clock=runtime.clock,
        **options,
    )


def peer_verifier_for(
    booted: BootedNode, evidence_verifier: AttestationVerifier, clock: TrioClock
) -> PeerAttestationVerifier:
    return PeerAttestationVerifier(
        verifier=evidence_verifier, policy=cluster_policy([booted.release]), clock=clock
    )


# -- keys ------------------------------------------------------------------------------------


def _keys_children(runtime: NodeRuntime) -> list[ChildSpec]:
    config, booted = runtime.config, runtime.booted
    tpm = runtime.opened.tpm
    release = booted.release
    keyring_path = config.state_dir / KEYRING_FILE
    if not keyring_path.exists():
        # The node's first start: a fresh KEK sealed to this measured state,
        # under a newly defined keyring counter (refused if one exists).
        write_atomically(keyring_path, KeyVault.new_keyring(tpm, runtime.random))
        _log.info("keyring_created", path=str(keyring_path))

    def persist(keyring_file: bytes) -> None:
        write_atomically(keyring_path, keyring_file)

    def open_vault() -> KeyVault:
        return KeyVault(
            custody=booted.custody,
            tpm=tpm,
            random=runtime.random,
            clock=runtime.clock,
            verifier=runtime.evidence_verifier,
            policy_for=lambda model_id: model_policy([release], model_id),
            provider_static_for=release.model_provider_static,
            keyring=keyring_path.read_bytes(),
            persist=persist,
        )

    return [
        ChildSpec(
            id=KEY_CUSTODY_NAME,
            start=lambda: KeyCustodyActor(open_vault, anyio.to_thread.run_sync),
            name=KEY_CUSTODY_NAME,
        )
    ]


async def start_keys_listener(runtime: NodeRuntime) -> None:
    from actors.key_custody import serve_key_custody  # type: ignore[attr-defined]

    config = runtime.config
    assert config.keys is not None
    custody_ref = runtime.system.ref(config.node, KEY_CUSTODY_NAME)
    handler = gate_connections(serve_key_custody(custody_ref), runtime.drain)
    runtime.keys_port = await runtime.servers.start(
        functools.partial(
            serve_secure,
            config.keys.listen.host,
            config.keys.listen.port,
            handler,
            static=runtime.booted.custody.static,
            entropy=runtime.random.token_bytes,
            verify_peer=_accept_any_client,
            # Anyone may connect: the node's proof takes the bounded client path.
            attestation=ChannelAttestation(
                prove=runtime.attestation.attest_client_channel, require=NOT_ATTESTED
            ),
        )
    )


# -- inference -------------------------------------------------------------------------------


async def _fetch_model_key(runtime: NodeRuntime) -> None:
    """The data key of the node's model, from the keys node, which must attest
    to the cluster policy; the key arrives wrapped to this node's attested key."""
    from actors.key_custody import fetch_data_key  # type: ignore[attr-defined]

    config = runtime.config
    assert config.inference is not None and config.inference.keys_address is not None
    address = config.inference.keys_address
    with trio.fail_after(DATA_KEY_TIMEOUT_S):
        stream = await anyio.connect_tcp(address.host, address.port)
        channel = await connect_secure(
            stream,
            static=runtime.booted.custody.static,
            entropy=runtime.random.token_bytes,
            verify_peer=_accept_any_client,
            attestation=ChannelAttestation(prove=NOT_ATTESTED, require=runtime.peer_verifier),
        )
        async with channel:
            await fetch_data_key(
                channel,
                runtime.booted.custody,
                runtime.opened.tpm,
                config.inference.model,
                channel.remote_static,
            )


async def _load_engine(runtime: NodeRuntime) -> Engine:
    config = runtime.config
    inference = config.inference
    assert inference is not None
    if inference.engine is EngineKind.SCRIPTED:
        from simulations.engine import ScriptedEngine

        _log.warning("scripted_engine", model=inference.model, state="development only")
        return ScriptedEngine(inference.model)
    from nodes.engines.llama import LlamaEngine
    from nodes.model_store import open_sealed_model

    assert inference.sealed_model is not None
    await _fetch_model_key(runtime)
    spec = runtime.booted.release.artifacts[model_artifact_name(inference.model)]
    sealed: Path = inference.sealed_model
    custody = runtime.booted.custody

    def load() -> Engine:
        with open_sealed_model(
            sealed,
            custody.data_key_for,
            model_id=inference.model,
            expected_length=spec.length,
            expected_sha384=spec.hashes["sha384"],
        ) as weights:
            return LlamaEngine(Path(weights.path), model_id=inference.model)

    return await anyio.to_thread.run_sync(load)


async def _inference_children(runtime: NodeRuntime) -> list[ChildSpec]:
    from actors.inference import (  # type: ignore[attr-defined]
        InferenceActor,
        InferenceWorker,
        SchedulerMembership,
    )

    config = runtime.config
    inference = config.inference
    assert inference is not None
    engine = await _load_engine(runtime)
    scheduler = runtime.system.ref(inference.scheduler_node, SCHEDULER_NAME)
    return [
        ChildSpec(
            id=INFERENCE_NAME,
            start=lambda: InferenceWorker(
                InferenceActor(engine, anyio.to_thread.run_sync), slots=inference.slots
            ),
            name=INFERENCE_NAME,
            # In-flight generations may finish while the node drains.
            shutdown=config.drain_deadline_s,
        ),
        ChildSpec(
            id="scheduler_membership",
            start=lambda: SchedulerMembership(
                scheduler=scheduler,
                model=inference.model,
                slots=inference.slots,
                clock=runtime.clock,
            ),
            name="scheduler_membership",
        ),
    ]


# -- ingress ---------------------------------------------------------------------------------


def _ingress_children(runtime: NodeRuntime) -> list[ChildSpec]:
    from actors.scheduler import SchedulerActor  # type: ignore[attr-defined]

    return [
        ChildSpec(
            id=SCHEDULER_NAME,
            start=lambda: SchedulerActor(clock=runtime.clock),
            name=SCHEDULER_NAME,
        )
    ]


async def start_ingress(runtime: NodeRuntime) -> None:
    from actors.ingress import create_app  # type: ignore[attr-defined]
    from actors.scheduler import SchedulerDispatcher  # type: ignore[attr-defined]
    from nodes.daemon.config import load_tenants
    from nodes.https import TlsIdentity, serve_https
    from nodes.store import SqliteStore
    from nodes.tlog import TlogHttpApp, TransparencyLog
    from protocol.attestation import tls_key_binding  # type: ignore[attr-defined]

    config = runtime.config
    ingress = config.ingress
    assert ingress is not None
    tenants = load_tenants(ingress.tenants)
    tls = TlsIdentity.generate(runtime.random)
    binding = tls_key_binding(tls.spki_der)
    custody, tpm = runtime.booted.custody, runtime.opened.tpm

    async def attest_tls(nonce: bytes) -> bytes:
        # This node's document, its user data binding the TLS key this very
        # boot generated, so a verifying client can pin the TLS endpoint.
        return await anyio.to_thread.run_sync(
            functools.partial(custody.attest, tpm, nonce=nonce, user_data=binding)
        )

    log = TransparencyLog(SqliteStore(ingress.tlog, read_only=True), clock=runtime.clock)
    dispatcher = SchedulerDispatcher(
        runtime.system, runtime.system.ref(config.node, SCHEDULER_NAME)
    )
    app = create_app(
        dispatcher=dispatcher,
        tenants=tenants,
        attestation=attest_tls,
        tlog_app=TlogHttpApp(log),
        clock=runtime.clock,
    )
    runtime.https_port = await runtime.servers.start(
        functools.partial(
            serve_https,
            gate_http(app, runtime.drain),
            ingress.listen.host,
            ingress.listen.port,
            tls,
        )
    )
    runtime.tls_cert = tls.cert_pem.decode()


# -- the tree --------------------------------------------------------------------------------


async def role_supervisors(runtime: NodeRuntime) -> list[ChildSpec]:
    """One child supervisor per role, in a fixed order (keys, ingress, inference)."""
    roles = runtime.config.roles
    specs: list[ChildSpec] = []
    builders: list[tuple[str, Callable[[], Awaitable[list[ChildSpec]]]]] = []
    build: Callable[[], Awaitable[list[ChildSpec]]]

    async def keys() -> list[ChildSpec]:
        return _keys_children(runtime)

    async def ingress() -> list[ChildSpec]:
        return _ingress_children(runtime)

    async def inference() -> list[ChildSpec]:
        return await _inference_children(runtime)

    for role, build in (("keys", keys), ("ingress", ingress), ("inference", inference)):
        if role in roles:
            builders.append((role, build))
    for role, build in builders:
        children = await build()
        specs.append(
            ChildSpec(
                id=role,
                start=functools.partial(Supervisor, children),
                shutdown=None,
                restart=Restart.PERMANENT,
            )
        )
    return specs
