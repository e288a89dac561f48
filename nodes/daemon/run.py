"""``mantle-node run --config node.toml``: one node, from config to drain.

In order:

1. native output captured and JSON logging to standard error
   (:mod:`nodes.daemon.logs`);
2. the config read (:mod:`nodes.daemon.config`; exit 2 on any error, logged
   as ``config_refused`` with its check and key), the data directory created
   (0700), logging extended to ``<data_dir>/node.log``;
3. the TPM opened (:mod:`nodes.daemon.tpm`; a simulated one is logged as
   such, at warning level);
4. measured boot (:func:`nodes.boot.measured_boot`) from the release bundle,
   the installed artifacts and the pins the config names; a refusal is
   logged as ``boot_refused`` with its :class:`~nodes.boot.BootCheck` (exit 3);
5. the node's actor system, attestation service and node link, its roles'
   supervisors under one root supervisor and their listeners
   (:mod:`nodes.daemon.roles`), then ``<data_dir>/ready.json`` written
   atomically;
6. on SIGTERM or SIGINT: ``ready.json`` removed, new work refused (closed
   connections, HTTP 503), in-flight work given ``drain_deadline_s`` to
   finish, then everything stopped in reverse order and exit 0. A second
   signal cuts the drain short. A root supervisor that gives up, or any
   unexpected failure, is exit 1 (logged by type and location only).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

import anyio
import anyio.to_thread
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from actors import Strategy, Supervisor, open_actor_system
from actors.attestation import AttestationService
from actors.log import exception_summary, get_logger
from actors.remote import RemoteLayer
from mantle import MAX_PEM_PIN_BYTES, ReleaseDirectory, read_bounded_file
from nodes.boot import BootCheck, BootedNode, BootError, BootInputs, measured_boot
from nodes.clock import TrioClock
from nodes.daemon.config import ConfigCheck, ConfigError, NodeConfig, load_config
from nodes.daemon.drain import Drain
from nodes.daemon.logs import NativeOutputCapture, route_logs
from nodes.daemon.roles import (
    NodeRuntime,
    build_transport,
    peer_verifier_for,
    role_supervisors,
    start_ingress,
    start_keys_listener,
)
from nodes.daemon.tpm import (
    OpenedTpm,
    TpmUnavailable,
    open_tpm,
    peer_evidence_verifier,
    write_atomically,
)
from nodes.random import SystemRandom
from protocol.release import MAX_LOG_PROOF_BYTES, MAX_ROOT_BYTES, MAX_TARGETS_BYTES

EXIT_DRAINED: Final = 0
EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2
EXIT_BOOT_REFUSED: Final = 3
#: How long the actor system gets to stop after the drain.
SHUTDOWN_TIMEOUT_S: Final = 10.0
ROOT_SUPERVISOR: Final = "node"

_log = get_logger("daemon")


class _Unreadable(Exception):
    pass


def _read_pin(path: Path, limit: int, key: str) -> bytes:
    try:
        data: bytes | None = read_bounded_file(path, limit, key, error=_Unreadable)
    except _Unreadable:
        data = None
    if data is None:
        raise ConfigError(ConfigCheck.FILE, key, f"cannot read the file (or over {limit} bytes)")
    return data


def _log_key(path: Path) -> bytes:
    key = None
    with contextlib.suppress(ValueError, TypeError):
        key = load_pem_public_key(_read_pin(path, MAX_PEM_PIN_BYTES, "trust.log_key"))
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(ConfigCheck.VALUE, "trust.log_key", "must be an Ed25519 public key (PEM)")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def boot_inputs(config: NodeConfig) -> BootInputs:
    """What measured boot reads: the bundle (unreadable -> BootError), the pins
    (unreadable -> ConfigError), the install root and the state directory."""
    bundle = ReleaseDirectory(config.release.bundle)
    trusted_root = _read_pin(config.trust.release_root, MAX_ROOT_BYTES, "trust.release_root")
    log_key = _log_key(config.trust.log_key)
    files: dict[str, bytes] = {}
    for name, path, limit in (
        ("root", bundle.root, MAX_ROOT_BYTES),
        ("targets", bundle.targets, MAX_TARGETS_BYTES),
        ("log proof", bundle.log_proof, MAX_LOG_PROOF_BYTES),
    ):
        try:
            files[name] = read_bounded_file(path, limit, name, error=_Unreadable)
        except _Unreadable:
            files[name] = b""
        if not files[name]:
            raise BootError(
                BootCheck.MALFORMED_RELEASE,
                f"the release bundle's {name} cannot be read (or is empty or too large)",
            )
    inference = config.inference
    return BootInputs(
        root_metadata=files["root"],
        targets_metadata=files["targets"],
        log_proof=files["log proof"],
        trusted_root=trusted_root,
        log_public_key=log_key,
        install_root=config.release.install_root,
        state_dir=config.state_dir,
        model_id=inference.model if inference is not None else None,
    )


@dataclass(frozen=True)
class ReadyReport:
    node: str
    pid: int
    roles: list[str]
    link_port: int
    keys_port: int | None
    https_port: int | None
    tls_cert: str | None
    simulated_tpm: bool

    def encode(self) -> bytes:
        return (json.dumps(self.__dict__, sort_keys=True) + "\n").encode()


def _ready_report(runtime: NodeRuntime) -> ReadyReport:
    assert runtime.link_port is not None
    return ReadyReport(
        node=runtime.config.node,
        pid=os.getpid(),
        roles=sorted(runtime.config.roles),
        link_port=runtime.link_port,
        keys_port=runtime.keys_port,
        https_port=runtime.https_port,
        tls_cert=runtime.tls_cert,
        simulated_tpm=runtime.opened.simulated,
    )


async def _first_of(*waits: object) -> int:
    """Index of the first of ``waits`` (async callables) to return; the rest are cancelled."""
    winner: list[int] = []
    async with trio.open_nursery() as nursery:
        for index, wait in enumerate(waits):

            async def run(index: int = index, wait: object = wait) -> None:
                await wait()  # type: ignore[operator]
                if not winner:
                    winner.append(index)
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
    return winner[0] if winner else -1


async def serve(config: NodeConfig, booted: BootedNode, opened: OpenedTpm) -> int:
    """Run the booted node until a signal drains it (0) or its tree gives up (1)."""
    clock, random = TrioClock(), SystemRandom()
    evidence_verifier = peer_evidence_verifier(config, booted.release)
    drain = Drain()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

        async def next_signal() -> None:
            async for received in signals:
                _log.info("signal_received", reason=signal.Signals(received).name)
                return

        async with (
            open_actor_system(
                config.node, random=random, clock=clock, shutdown_timeout=SHUTDOWN_TIMEOUT_S
            ) as system,
            trio.open_nursery() as servers,
        ):
            attestation = AttestationService(
                tpm=opened.tpm,
                custody=booted.custody,
                kind=opened.kind,
                clock=clock,
                run_blocking=anyio.to_thread.run_sync,
            )
            servers.start_soon(attestation.run)
            runtime = NodeRuntime(
                config=config,
                booted=booted,
                opened=opened,
                system=system,
                servers=servers,
                drain=drain,
                clock=clock,
                random=random,
                attestation=attestation,
                peer_verifier=peer_verifier_for(booted, evidence_verifier, clock),
                evidence_verifier=evidence_verifier,
                log_public_key=_log_key(config.trust.log_key),
            )
            transport = build_transport(runtime)
            runtime.transport = transport
            RemoteLayer(system, transport)
            runtime.link_port = await servers.start(transport.run)
            root = system.spawn(
                Supervisor(await role_supervisors(runtime), strategy=Strategy.ONE_FOR_ONE),
                name=ROOT_SUPERVISOR,
            )
            if not await system.wait_started(root):
                _log.error("supervisor_start_failed", supervisor=ROOT_SUPERVISOR)
                servers.cancel_scope.cancel()
                return EXIT_FAILED
            if "keys" in config.roles:
                await start_keys_listener(runtime)
            if "ingress" in config.roles:
                await start_ingress(runtime)
            write_atomically(config.ready_file, _ready_report(runtime).encode())
            _log.info(
                "node_ready",
                node=config.node,
                role=sorted(config.roles),
                port=runtime.link_port,
                release_version=booted.release.version,
                state="simulated_tpm" if opened.simulated else "tpm",
            )

            async def root_ended() -> None:
                await system.wait_terminated(root, None)

            why = await _first_of(next_signal, root_ended)
            with contextlib.suppress(FileNotFoundError):
                config.ready_file.unlink()
            if why != 0:
                _log.error("supervisor_gave_up", supervisor=ROOT_SUPERVISOR)
                servers.cancel_scope.cancel()
                return EXIT_FAILED
            drain.begin()
            for ref in runtime.stop_first:
                system.stop(ref)
            _log.info("draining", count=drain.in_flight, duration_ms=config.drain_deadline_s * 1000)

            async def idle() -> None:
                finished = await drain.wait_idle(config.drain_deadline_s)
                _log.info(
                    "drained", state="idle" if finished else "deadline", count=drain.in_flight
                )

            await _first_of(idle, next_signal)
            servers.cancel_scope.cancel()
            runtime.exit_stack.close()
    _log.info("node_stopped", node=config.node)
    return EXIT_DRAINED


def _prepare(config: NodeConfig) -> None:
    for directory in (config.data_dir, config.state_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        config.ready_file.unlink()  # a previous run's, no longer true


def _run(config_path: Path, capture: NativeOutputCapture) -> tuple[int, TextIO | None]:
    failure: ConfigError | None = None
    try:
        config = load_config(config_path)
    except ConfigError as error:
        failure = error
    if failure is not None:
        _log.error("config_refused", check=failure.check.value, reason=str(failure))
        return EXIT_CONFIG, None
    try:
        _prepare(config)
    except OSError as error:
        _log.error("data_dir_unusable", path=str(config.data_dir), error_type=type(error).__name__)
        return EXIT_FAILED, None
    log_file = route_logs(capture, config.log_file, config.log_level)
    _log.info("node_starting", node=config.node, role=sorted(config.roles), path=str(config.path))
    clock = TrioClock()
    status = EXIT_FAILED
    try:
        opened = open_tpm(config, clock)
        if opened.simulated:
            _log.warning(
                "simulated_tpm",
                node=config.node,
                state="development only: attestation by a simulated NitroTPM proves nothing"
                " about hardware",
            )
        inputs = boot_inputs(config)
        booted = measured_boot(inputs, tpm=opened.tpm, random=SystemRandom(), now=datetime.now(UTC))
        _log.info("boot_passed", release_version=booted.release.version, node=config.node)
        status = trio.run(serve, config, booted, opened)
    except Exception as caught:  # sorted below, by type; never by message
        failed: BaseException = caught
        while isinstance(failed, BaseExceptionGroup) and len(failed.exceptions) == 1:
            failed = failed.exceptions[0]  # a nursery's group around one failure
        status = _report_failure(failed)
    return status, log_file


def _report_failure(error: BaseException) -> int:
    if isinstance(error, ConfigError):
        _log.error("config_refused", check=error.check.value, reason=str(error))
        return EXIT_CONFIG
    if isinstance(error, BootError):
        _log.error("boot_refused", check=error.check.value, reason=error.detail)
        return EXIT_BOOT_REFUSED
    if isinstance(error, TpmUnavailable):
        _log.error("tpm_unavailable", check=error.check.value, reason=str(error))
        return EXIT_FAILED
    # The node ends; the exception's type and location say where, never its text.
    _log.error("node_failed", **exception_summary(error))
    return EXIT_FAILED


def run_node(config_path: Path) -> int:
    """The whole daemon; returns its exit status (see the module docstring)."""
    log_file: TextIO | None = None
    status = EXIT_FAILED
    with NativeOutputCapture() as capture:
        route_logs(capture, None, "info")
        try:
            status, log_file = _run(config_path, capture)
        except BaseException as escaped:  # SIGINT before the drain's receiver, and the like
            # The capture sends an escaping traceback nowhere; say what ended
            # the node, by type and location only.
            _log.error("node_failed", **exception_summary(escaped))
    if log_file is not None:
        log_file.close()
    return status
