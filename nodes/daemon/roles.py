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
from typing import Final

import anyio
import anyio.to_thread
import trio

from actors import ActorError, ActorSystem, ChildSpec, Restart, Supervisor
from actors.attestation import AttestationService, PeerAttestationVerifier
from actors.channel import connect_secure
from actors.inference import (
    ATTESTOR_NAME,
    DrainWorker,
    InferenceActor,
    InferenceWorker,
    NodeAttestor,
    SchedulerMembership,
    SealedServing,
    WorkerLoad,
)
from actors.ingress import IngressLimits, ReleaseFiles, TenantStore, create_app
from actors.key_custody import (
    MAX_KEY_MESSAGE_BYTES,
    KeyCustodyActor,
    KeyCustodyError,
    KeyVault,
    asker_channel_attestation,
    custody_actor,
    fetch_data_key,
    keys_node_channel_attestation,
    serve_key_custody,
)
from actors.log import get_logger
from actors.scheduler import DEFAULT_SCHEDULER_MAILBOX, SchedulerDispatcher, SchedulerLimits
from actors.seams.engine import Engine
from nodes.boot import BootedNode
from nodes.clock import TrioClock
from nodes.daemon.config import EngineKind, NodeConfig
from nodes.daemon.drain import Drain, gate_connections, gate_http
from nodes.daemon.tpm import OpenedTpm, write_atomically
from nodes.https import generate_tls_identity, serve_https
from nodes.random import SystemRandom
from nodes.store import SqliteStore
from nodes.tcp import serve_secure
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from nodes.tlog import TlogHttpApp, TransparencyLog
from protocol.attestation import AttestationVerifier, tls_key_binding
from protocol.framing import SessionError
from protocol.measurement import (
    cluster_policy,
    model_artifact_name,
    model_policy,
    release_models,
)

KEYRING_FILE: Final = "keyring"
KEY_CUSTODY_NAME: Final = "key_custody"
INFERENCE_NAME: Final = "inference"
SCHEDULER_NAME: Final = "scheduler"
MEMBERSHIP_NAME: Final = "scheduler_membership"
#: How long the inference node waits for its data key (the keys node may start later).
DATA_KEY_TIMEOUT_S: Final = 120.0
#: Pause between two attempts to fetch the data key.
DATA_KEY_RETRY_S: Final = 0.5
#: While draining, how often the inference worker is asked whether it still runs anything.
DRAIN_POLL_S: Final = 0.1
_WORKER_STATUS_TIMEOUT_S: Final = 2.0
#: Where an ingress node writes its boot's TLS certificate (under its data dir).
TLS_CERT_FILE: Final = Path("tls") / "cert.pem"

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
    #: The log key the node pins (raw Ed25519), for the read-only log it serves.
    log_public_key: bytes | None = None
    link_port: int | None = None
    keys_port: int | None = None
    https_port: int | None = None
    tls_cert: str | None = None
    #: The ingress's dispatcher, shared by the scheduler actor and the HTTP app.
    dispatcher: SchedulerDispatcher | None = None
    #: The node link transport (the scheduler reads joined nodes' link keys).
    transport: TcpNoiseTransport | None = None
    #: Role supervisors' child specs, started under the root supervisor.
    children: list[ChildSpec] = field(default_factory=list)
    #: What the roles wait for once the node drains, before its actors stop:
    #: their work in flight finishing (the drain deadline bounds them all).
    settle: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    exit_stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


async def _identity_by_attestation(remote_static: bytes, payload: bytes) -> None:
    """No static key is known in advance (they are born at boot): on the key
    channel the keys node is admitted by its attestation, checked right after
    the handshake, and an asker proves itself inside ``keys.data_key_request``."""


def build_transport(runtime: NodeRuntime) -> TcpNoiseTransport:
    config = runtime.config
    peers = {
        # Static keys are born in memory at boot: nobody knows a peer's in
        # advance, it is admitted by its attestation (the transport's contract).
        peer.node: PeerAddress(peer.address.host, peer.address.port, None)
        for peer in config.link.peers
    }
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
        # Inference nodes join the ingress node; they are not configured there.
        accept_joining="ingress" in config.roles,
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
    config = runtime.config
    assert config.keys is not None
    custody = custody_actor(runtime.system.ref(config.node, KEY_CUSTODY_NAME))
    handler = gate_connections(serve_key_custody(custody), runtime.drain)
    runtime.keys_port = await runtime.servers.start(
        functools.partial(
            serve_secure,
            config.keys.listen.host,
            config.keys.listen.port,
            handler,
            static=runtime.booted.custody.static,
            entropy=runtime.random.token_bytes,
            verify_peer=_identity_by_attestation,
            # Anyone may connect: the node's proof takes the bounded client path.
            attestation=keys_node_channel_attestation(
                prove=runtime.attestation.attest_client_channel
            ),
            max_payload=MAX_KEY_MESSAGE_BYTES,
        )
    )


# -- inference -------------------------------------------------------------------------------


class DataKeyUnavailable(Exception):
    """The inference node got no data key for its model within the deadline.
    ``check`` names the last attempt's failure (its type or key-exchange check)."""

    def __init__(self, check: str) -> None:
        super().__init__(f"no data key within {DATA_KEY_TIMEOUT_S:g} s (last: {check})")
        self.check = check


async def _fetch_once(runtime: NodeRuntime) -> int:
    config = runtime.config
    assert config.inference is not None and config.inference.keys_address is not None
    address = config.inference.keys_address
    stream = await anyio.connect_tcp(address.host, address.port)
    channel = await connect_secure(
        stream,
        static=runtime.booted.custody.static,
        entropy=runtime.random.token_bytes,
        verify_peer=_identity_by_attestation,
        attestation=asker_channel_attestation(verify_keys_node=runtime.peer_verifier),
        max_payload=MAX_KEY_MESSAGE_BYTES,
    )
    async with channel:
        return await fetch_data_key(
            channel,
            runtime.booted.custody,
            runtime.opened.tpm,
            config.inference.model,
            evidence_kind=runtime.opened.kind,
            run_blocking=anyio.to_thread.run_sync,
        )


async def _fetch_model_key(runtime: NodeRuntime) -> None:
    """The data key of the node's model, from the keys node, which must attest
    to the cluster policy; the key arrives wrapped to this node's attested key.
    Retried until the keys node is up (and holds the key), within
    :data:`DATA_KEY_TIMEOUT_S`."""
    last = "none"
    attempts = 0
    with trio.move_on_after(DATA_KEY_TIMEOUT_S):
        while True:
            attempts += 1
            failure: str | None = None
            try:
                version = await _fetch_once(runtime)
            except KeyCustodyError as refused:
                failure = str(getattr(refused, "check", type(refused).__name__))
            except (OSError, SessionError, TimeoutError) as failed:
                failure = type(failed).__name__
            if failure is None:
                _log.info("data_key_received", key_version=version, count=attempts)
                return
            last = failure
            if attempts == 1 or attempts % 20 == 0:
                _log.warning("data_key_retry", check=failure, count=attempts)
            await trio.sleep(DATA_KEY_RETRY_S)
    raise DataKeyUnavailable(last)


async def _load_engine(runtime: NodeRuntime) -> Engine:
    config = runtime.config
    inference = config.inference
    assert inference is not None
    if inference.engine is EngineKind.SCRIPTED:
        from simulations.engine import ScriptedEngine

        _log.warning("scripted_engine", model=inference.model, state="development only")
        if inference.token_interval_s is None:
            return ScriptedEngine(inference.model)
        from nodes.engines.paced import PacedEngine

        return PacedEngine(ScriptedEngine(inference.model), inference.token_interval_s)
    from nodes.engines.llama import LlamaEngine
    from nodes.model_store import open_sealed_model

    assert inference.sealed_model is not None
    await _fetch_model_key(runtime)
    spec = runtime.booted.release.artifacts[model_artifact_name(inference.model)]
    sealed: Path = inference.sealed_model
    custody = runtime.booted.custody

    def load() -> Engine:
        # Decrypted into memory only, checked against the release, loaded,
        # and the memory file closed once llama.cpp holds the weights.
        with open_sealed_model(
            sealed,
            custody.data_key_for,
            model_id=inference.model,
            expected_length=spec.length,
            expected_sha384=spec.hashes["sha384"],
        ) as weights:
            return LlamaEngine(Path(weights.path), model_id=inference.model)

    engine = await anyio.to_thread.run_sync(load)
    _log.info("model_loaded", model=inference.model)
    return engine


async def _finish_generations(runtime: NodeRuntime) -> None:
    """The inference node's drain: its worker takes no new placement and
    reports no free slot (the scheduler places elsewhere), and this returns
    once what it runs has finished. The membership stays joined meanwhile:
    a leave would make the scheduler end every request this node still
    streams, which is what draining is there to avoid."""
    worker = runtime.system.ref(runtime.config.node, INFERENCE_NAME)
    while True:
        try:
            # Asked every time: a worker restarted meanwhile drains too.
            load = await worker.ask(DrainWorker(), _WORKER_STATUS_TIMEOUT_S)
        except ActorError:
            return  # no worker, nothing running
        if not isinstance(load, WorkerLoad) or not load.running:
            return
        await trio.sleep(DRAIN_POLL_S)


async def _inference_children(runtime: NodeRuntime) -> list[ChildSpec]:
    config = runtime.config
    inference = config.inference
    assert inference is not None
    engine = await _load_engine(runtime)
    booted = runtime.booted
    # Sealed requests: opened with the node's static key, answered with
    # receipts signed by its receipt key, naming the booted release's model
    # digest and version.
    sealed = SealedServing(
        custody=booted.custody,
        model_sha384=booted.release.artifacts[model_artifact_name(inference.model)].hashes[
            "sha384"
        ],
        release_version=booted.release.version,
    )
    attestation = runtime.attestation
    scheduler = runtime.system.ref(inference.scheduler_node, SCHEDULER_NAME)
    runtime.settle.append(functools.partial(_finish_generations, runtime))
    return [
        ChildSpec(
            id=INFERENCE_NAME,
            start=lambda: InferenceWorker(
                InferenceActor(engine, anyio.to_thread.run_sync, engine_loop_in_thread=True),
                slots=inference.slots,
                sealed=sealed,
            ),
            name=INFERENCE_NAME,
            # In-flight generations may finish while the node drains.
            shutdown=config.drain_deadline_s,
        ),
        ChildSpec(
            id=ATTESTOR_NAME,
            # Clients' nonces take the attestation service's client path.
            start=lambda: NodeAttestor(
                attestation.attest_client_channel, static_public=booted.custody.static_public
            ),
            name=ATTESTOR_NAME,
        ),
        ChildSpec(
            id=MEMBERSHIP_NAME,
            # The node link to the scheduler's node is dialled on the first
            # send, which is the membership's join.
            start=lambda: SchedulerMembership(
                scheduler, model=inference.model, slots=inference.slots
            ),
            name=MEMBERSHIP_NAME,
            # Stopped with the tree after the drain (its stopping leaves).
            restart=Restart.TRANSIENT,
        ),
    ]


# -- ingress ---------------------------------------------------------------------------------


def _ingress_children(runtime: NodeRuntime) -> list[ChildSpec]:
    ingress = runtime.config.ingress
    assert ingress is not None
    limits = SchedulerLimits()
    if ingress.max_queued is not None or ingress.max_queued_per_tenant is not None:
        max_queued = ingress.max_queued or limits.max_queued
        limits = SchedulerLimits(
            max_queued=max_queued,
            max_queued_per_tenant=min(
                ingress.max_queued_per_tenant or limits.max_queued_per_tenant, max_queued
            ),
        )
    transport = runtime.transport
    dispatcher = SchedulerDispatcher(
        runtime.system,
        limits=limits,
        known_models=release_models(runtime.booted.release),
        name=SCHEDULER_NAME,
        # Sealed requests go only where the link's proven key is a candidate.
        peer_keys=transport.peer_static if transport is not None else None,
    )
    runtime.dispatcher = dispatcher
    return [
        ChildSpec(
            id=SCHEDULER_NAME,
            start=dispatcher.actor,
            name=SCHEDULER_NAME,
            mailbox=DEFAULT_SCHEDULER_MAILBOX,
        )
    ]


async def start_ingress(runtime: NodeRuntime) -> None:
    config = runtime.config
    ingress = config.ingress
    assert ingress is not None and runtime.dispatcher is not None
    tenants = TenantStore.load(ingress.tenants)
    identity = generate_tls_identity()
    binding = tls_key_binding(identity.spki_der)
    attestation = runtime.attestation

    async def attest_tls(nonce: bytes) -> bytes:
        # This node's document over the client's nonce, its user data binding
        # the TLS key this very boot generated, so a verifying client can pin
        # the endpoint. Customers' path: bounded, behind the node links'.
        evidence = await attestation.attest_client_channel(nonce, user_data=binding)
        return evidence.document

    log = TransparencyLog(
        SqliteStore(ingress.tlog, read_only=True),
        clock=runtime.clock,
        public_key=runtime.log_public_key,
    )
    app = create_app(
        dispatcher=runtime.dispatcher,
        tenants=tenants,
        attestation=attest_tls,
        tls_spki_der=identity.spki_der,
        tlog_app=TlogHttpApp(log),
        release=ReleaseFiles(
            root=runtime.booted.root_metadata,
            targets=runtime.booted.targets_metadata,
            log_proof=runtime.booted.log_proof,
        ),
        clock=runtime.clock,
        random=runtime.random,
        limits=IngressLimits(),
    )
    cert_path = config.data_dir / TLS_CERT_FILE
    cert_path.parent.mkdir(mode=0o700, exist_ok=True)
    endpoint = await runtime.servers.start(
        functools.partial(
            serve_https,
            gate_http(app, runtime.drain),
            identity=identity,
            host=ingress.listen.host,
            port=ingress.listen.port,
            cert_path=cert_path,
        )
    )
    runtime.https_port = endpoint.port
    runtime.tls_cert = str(cert_path)


# -- the tree --------------------------------------------------------------------------------


async def role_supervisors(runtime: NodeRuntime) -> list[ChildSpec]:
    """One child supervisor per role, in a fixed order (keys, ingress, inference)."""
    roles = runtime.config.roles

    async def keys() -> list[ChildSpec]:
        return _keys_children(runtime)

    async def ingress() -> list[ChildSpec]:
        return _ingress_children(runtime)

    async def inference() -> list[ChildSpec]:
        return await _inference_children(runtime)

    builders: tuple[tuple[str, Callable[[], Awaitable[list[ChildSpec]]]], ...] = (
        ("keys", keys),
        ("ingress", ingress),
        ("inference", inference),
    )
    specs: list[ChildSpec] = []
    for role, build in builders:
        if role not in roles:
            continue
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
