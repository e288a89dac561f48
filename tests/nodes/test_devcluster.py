"""``mantle-node dev``: the local cluster's files, release, supervision and command line.

The pure parts run alone: the TOML it writes (read back by ``tomllib``), the
node configs and tenants file, the data directory's rules, the release (which
a simulated node then boots), ``ready.json``, and the supervision of real
child processes (a trivial child stands in for a node: the thing supervised
is the process, not what it runs). The whole cluster test starts
``mantle-node dev --engine scripted`` as a subprocess and asks its ingress
over TLS.
"""

from __future__ import annotations

import json
import os
import select
import signal
import ssl
import stat
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from mantle import load_pins
from nodes.boot import BootInputs, measured_boot
from nodes.cli import build_parser
from nodes.cli import main as node_main
from nodes.clock import TrioClock
from nodes.devcluster import (
    DEMO_MODEL_ID,
    INGRESS_NODE,
    KEYS_NODE,
    SCRIPTED_MODEL_MARKER,
    ClusterLayout,
    DevCluster,
    DevClusterCheck,
    DevClusterError,
    DevClusterSettings,
    EngineKind,
    InferenceSettings,
    NodeExited,
    ProcessSupervisor,
    api_key_matches,
    api_key_sha256,
    build_dev_release,
    inference_node_document,
    ingress_node_document,
    keys_node_document,
    lists_model,
    model_artifact,
    model_id_for,
    new_api_key,
    read_ready,
    toml_dumps,
    write_node_config,
    write_tenants,
)
from nodes.random import SystemRandom
from nodes.release import read_metadata_file
from protocol.key_custody import ENVELOPE_PROTOCOL
from protocol.noise import KeyPair
from protocol.release import MAX_LOG_PROOF_BYTES, MAX_ROOT_BYTES, MAX_TARGETS_BYTES
from simulations.nitrotpm import (
    SimulatedNitroPKI,
    SimulatedNitroTPM,
    reference_measurements,
    running_image,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-mantle-" + "5e" * 24


# -- arguments --------------------------------------------------------------------------


def test_dev_arguments_and_defaults() -> None:
    args = build_parser().parse_args(["dev"])
    assert (args.port, args.inference_nodes, args.engine) == (8443, 2, "llama")
    assert args.api_key is None and args.model is None and args.data_dir is None
    args = build_parser().parse_args(
        [
            *("dev", "--port", "0", "--api-key", API_KEY, "--inference-nodes", "3"),
            *("--engine", "scripted", "--data-dir", "/tmp/x", "--model-id", "m"),
        ]
    )
    assert (args.port, args.api_key, args.inference_nodes) == (0, API_KEY, 3)
    assert (args.engine, args.data_dir, args.model_id) == ("scripted", Path("/tmp/x"), "m")


@pytest.mark.parametrize(
    "argv",
    [
        ["dev", "--engine", "gpt"],
        ["dev", "--inference-nodes", "0"],
        ["dev", "--port", "70000"],
    ],
)
def test_dev_refuses_bad_arguments_while_parsing(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        node_main(argv)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["dev", "--api-key", "short"],
        ["dev", "--api-key", "sk-mantle-with a space-0123456789"],
        ["dev", "--model-id", "bad id!"],
        ["dev", "--engine", "scripted", "--model", "/x.gguf"],
    ],
)
def test_dev_refuses_bad_settings_before_starting_anything(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "dev"
    assert node_main([*argv, "--data-dir", str(data_dir)]) == 2
    assert "mantle-node dev:" in capsys.readouterr().err
    assert not data_dir.exists()


# -- the files it writes ----------------------------------------------------------------


def test_toml_round_trips_through_tomllib() -> None:
    tricky = 'quote " backslash \\ tab \t newline \n nul-free ünïcode 🙂 \x7f'
    document = {
        "name": tricky,
        "count": 3,
        "flag": False,
        "interval": 0.05,
        "tiny": 1e-05,
        "list": ["a", tricky],
        "table": {"inline": [{"node": "x", "address": "127.0.0.1:1"}], "empty": []},
        "rows": [{"id": "a", "n": 1}, {"id": "b", "n": 2}],
    }
    assert tomllib.loads(toml_dumps(document)) == document


def test_api_keys_are_random_and_stored_only_as_their_hash(tmp_path: Path) -> None:
    random = SystemRandom()
    first, second = (new_api_key(random.token_bytes(24)) for _ in range(2))
    assert first.startswith("sk-mantle-") and first != second and len(first) == 10 + 48
    layout = ClusterLayout(tmp_path)
    path = write_tenants(layout, first)
    text = path.read_text()
    assert first not in text
    assert tomllib.loads(text) == {"tenants": [{"id": "dev", "key_sha256": api_key_sha256(first)}]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api_key_matches(first, api_key_sha256(first))
    assert not api_key_matches(second, api_key_sha256(first))


def _read_config(layout: ClusterLayout, node: str) -> dict[str, object]:
    return tomllib.loads(layout.node_config(node).read_text())


def _written(layout: ClusterLayout) -> list[str]:
    return sorted(path.parent.name for path in layout.data_dir.glob("nodes/*/node.toml"))


def test_node_configs_follow_the_schema(tmp_path: Path) -> None:
    layout = ClusterLayout(tmp_path / "dev")
    layout.prepare()
    write_node_config(layout, KEYS_NODE, keys_node_document(layout))
    write_node_config(layout, INGRESS_NODE, ingress_node_document(layout, 8443))
    sealed = layout.sealed_model("m")
    for name, engine, model in (
        ("inference-1", EngineKind.LLAMA, sealed),
        ("inference-2", EngineKind.SCRIPTED, None),
    ):
        document = inference_node_document(
            layout,
            name,
            InferenceSettings("m", engine, model),
            ingress_link_port=7001,
            keys_port=7002,
        )
        write_node_config(layout, name, document)

    keys = _read_config(layout, KEYS_NODE)
    assert keys["roles"] == ["keys"] and keys["keys"] == {"listen": "127.0.0.1:0"}
    assert keys["data_dir"] == str(layout.node_dir(KEYS_NODE))
    assert keys["tpm"] == {
        "backend": "simulated",
        "pki_seed_file": str(layout.pki_seed_file),
        "seed_file": str(layout.tpm_seed_file(KEYS_NODE)),
    }
    assert keys["trust"] == {
        "attestation_root": str(layout.pins_dir / "attestation-root.pem"),
        "release_root": str(layout.pins_dir / "release-root.json"),
        "log_key": str(layout.pins_dir / "log-key.pub.pem"),
    }
    assert keys["release"] == {
        "bundle": str(layout.release_dir),
        "install_root": str(layout.install_root),
    }
    ingress = _read_config(layout, INGRESS_NODE)
    assert ingress["ingress"] == {
        "listen": "127.0.0.1:8443",
        "tenants": str(layout.tenants),
        "tlog": str(layout.tlog),
    }
    assert "inference" not in ingress and "keys" not in ingress
    llama = _read_config(layout, "inference-1")
    assert llama["link"] == {
        "listen": "127.0.0.1:0",
        "peers": [{"node": INGRESS_NODE, "address": "127.0.0.1:7001"}],
    }
    assert llama["inference"] == {
        "model": "m",
        "engine": "llama",
        "scheduler_node": INGRESS_NODE,
        "slots": 1,
        "sealed_model": str(sealed),
        "keys_address": "127.0.0.1:7002",
    }
    scripted = _read_config(layout, "inference-2")["inference"]
    assert isinstance(scripted, dict)
    assert scripted["engine"] == "scripted"
    assert "sealed_model" not in scripted and "keys_address" not in scripted
    # The daemon's own reader takes every file as it is (unknown keys, a
    # missing role table or a key of another engine would be refused).
    from nodes.daemon.config import EngineKind as DaemonEngine
    from nodes.daemon.config import load_config

    parsed = {name: load_config(layout.node_config(name)) for name in _written(layout)}
    assert parsed[KEYS_NODE].keys is not None and parsed[KEYS_NODE].data_dir == (
        layout.node_dir(KEYS_NODE)
    )
    assert parsed[INGRESS_NODE].ingress is not None
    assert parsed[INGRESS_NODE].ingress.tenants == layout.tenants
    assert parsed[INGRESS_NODE].drain_deadline_s < DevClusterSettings().stop_grace_s
    llama_config = parsed["inference-1"].inference
    assert llama_config is not None and llama_config.engine is DaemonEngine.LLAMA
    assert llama_config.sealed_model == sealed
    assert llama_config.keys_address is not None and llama_config.keys_address.port == 7002
    scripted_config = parsed["inference-2"].inference
    assert scripted_config is not None and scripted_config.engine is DaemonEngine.SCRIPTED
    with pytest.raises(ValueError, match="sealed"):
        inference_node_document(
            layout,
            "inference-3",
            InferenceSettings("m", EngineKind.LLAMA, None),
            ingress_link_port=1,
            keys_port=2,
        )


def test_data_dir_is_rebuilt_on_reuse_and_foreign_directories_are_refused(
    tmp_path: Path,
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(Exception, match="no mantle-node dev data directory"):
        ClusterLayout(foreign).prepare()
    assert (foreign / "thesis.tex").read_text() == "keep me"

    layout = ClusterLayout(tmp_path / "dev")
    layout.prepare()
    marker = json.loads(layout.marker.read_text())
    assert marker["simulated_tpm"] is True and "SIMULATED" in marker["note"]
    layout.node_dir("inference-1").mkdir(parents=True)
    layout.ready_file("inference-1").write_text("{}")
    layout.tenants.write_text("old")
    (layout.data_dir / "notes.txt").write_text("mine")
    layout.prepare()
    assert not layout.ready_file("inference-1").exists() and not layout.tenants.exists()
    assert (layout.data_dir / "notes.txt").read_text() == "mine"


def test_model_ids_from_file_names() -> None:
    assert model_id_for(Path("/m/Llama-3.2-1B Instruct.Q4_K_M.gguf")) == (
        "llama-3.2-1b-instruct.q4_k_m"
    )
    assert model_id_for(Path("/m/???.gguf")) == "model"


# -- the release ------------------------------------------------------------------------


def test_dev_release_is_logged_pinned_names_the_provider_and_boots(tmp_path: Path) -> None:
    random = SystemRandom()
    layout = ClusterLayout(tmp_path / "dev")
    layout.prepare()
    pki = SimulatedNitroPKI(random.token_bytes(32))
    provider = KeyPair.generate(ENVELOPE_PROTOCOL.dh, random.token_bytes)
    now = datetime.now(UTC)
    release = build_dev_release(
        layout,
        model_id="scripted",
        model=model_artifact(None),
        provider_static=provider.public,
        pki=pki,
        now=now,
    )
    verified = release.verified
    assert (verified.version, verified.min_version) == (1, 1)
    assert verified.model_provider_static("scripted") == provider.public
    assert verified.artifacts["models/scripted.gguf"].length == len(SCRIPTED_MODEL_MARKER)
    assert dict(verified.image_measurements) == dict(reference_measurements(running_image()))
    pins = load_pins(layout.pins_dir)
    assert pins.attestation_root.der == pki.root_der
    assert "SIMULATED" in (layout.pins_dir / "SIMULATED").read_text()
    assert layout.tlog.is_file()

    # What the nodes will do with it: a simulated machine of that cloud boots it.
    tpm = SimulatedNitroTPM(seed=random.token_bytes(32), pki=pki, clock=TrioClock())
    bundle = release.bundle
    booted = measured_boot(
        BootInputs(
            root_metadata=read_metadata_file(bundle.root, MAX_ROOT_BYTES, "root"),
            targets_metadata=read_metadata_file(bundle.targets, MAX_TARGETS_BYTES, "targets"),
            log_proof=read_metadata_file(bundle.log_proof, MAX_LOG_PROOF_BYTES, "proof"),
            trusted_root=pins.release_root,
            log_public_key=pins.log_public_key,
            install_root=release.install_root,
            state_dir=tmp_path / "state",
            model_id="scripted",
        ),
        tpm=tpm,
        random=random,
        now=now,
    )
    assert booted.release.release_digest == verified.release_digest


# -- ready.json and the listing ---------------------------------------------------------


def _ready(path: Path, **fields: object) -> None:
    document = {
        "node": "keys-1",
        "pid": 4242,
        "roles": ["keys"],
        "link_port": 7000,
        "keys_port": 7001,
        "https_port": None,
        "tls_cert": None,
        "simulated_tpm": True,
    }
    document.update(fields)
    path.write_text(json.dumps(document))


def test_ready_file_is_read_once_written_and_checked(tmp_path: Path) -> None:
    path, log = tmp_path / "ready.json", tmp_path / "node.log"
    assert read_ready(path, node="keys-1", pid=4242, log_path=log) is None
    _ready(path)
    ready = read_ready(path, node="keys-1", pid=4242, log_path=log)
    assert ready is not None and (ready.link_port, ready.keys_port) == (7000, 7001)
    for fields, problem in (
        ({"pid": 1}, "names process 1"),
        ({"node": "other"}, "names another node"),
        ({"simulated_tpm": False}, "not simulated"),
        ({"link_port": 0}, "does not parse"),
    ):
        _ready(path, **fields)
        with pytest.raises(DevClusterError, match=problem) as refused:
            read_ready(path, node="keys-1", pid=4242, log_path=log)
        assert refused.value.check is DevClusterCheck.NODE_READY
        assert str(log) in str(refused.value)


def test_model_listing_check() -> None:
    listing = {"object": "list", "data": [{"id": "m", "object": "model", "nodes": 2}]}
    assert lists_model(listing, "m", 2)
    assert not lists_model(listing, "m", 3)
    assert not lists_model(listing, "other", 1)
    assert lists_model({"data": [{"id": "m"}]}, "m", 2)
    assert not lists_model({"data": "m"}, "m", 1)
    assert not lists_model({"data": [{"id": "m", "nodes": True}]}, "m", 1)


# -- supervision, with trivial children -------------------------------------------------


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


@pytest.mark.anyio
async def test_supervisor_stops_children_and_kills_the_ones_that_ignore_sigterm(
    tmp_path: Path,
) -> None:
    supervisor = ProcessSupervisor(grace_s=1.0)
    polite = supervisor.start(
        "polite",
        _child("import time\nprint('up', flush=True)\ntime.sleep(60)"),
        log_path=tmp_path / "polite.log",
        console_path=tmp_path / "polite.console",
    )
    stubborn = supervisor.start(
        "stubborn",
        _child(
            """
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print('up', flush=True)
            time.sleep(60)
            """
        ),
        log_path=tmp_path / "stubborn.log",
        console_path=tmp_path / "stubborn.console",
    )
    with anyio.fail_after(30):
        while not all(
            p.exists() and "up" in p.read_text()
            for p in (tmp_path / "polite.console", tmp_path / "stubborn.console")
        ):
            await anyio.sleep(0.05)
        assert supervisor.first_exited() is None
        # Its own process group: a terminal's Ctrl-C reaches the dev cluster only.
        assert os.getpgid(polite.pid) == polite.pid
        await supervisor.stop()
    assert polite.returncode() == -signal.SIGTERM
    assert stubborn.returncode() == -signal.SIGKILL
    await supervisor.stop()  # twice is harmless


@pytest.mark.anyio
async def test_supervisor_names_the_child_that_exits(tmp_path: Path) -> None:
    supervisor = ProcessSupervisor(grace_s=5.0)
    supervisor.start(
        "sleeper",
        _child("import time; time.sleep(60)"),
        log_path=tmp_path / "sleeper.log",
        console_path=tmp_path / "sleeper.console",
    )
    supervisor.start(
        "crasher",
        _child("import sys, time; time.sleep(0.3); sys.exit(3)"),
        log_path=tmp_path / "crasher.log",
        console_path=tmp_path / "crasher.console",
    )
    try:
        with anyio.fail_after(30), pytest.raises(NodeExited) as exited:
            await supervisor.wait_until(
                lambda: None,
                deadline=anyio.current_time() + 25,
                waiting_for=supervisor.nodes[0],
                what="become ready",
            )
        assert exited.value.node == "crasher" and exited.value.returncode == 3
        assert "crasher exited with status 3" in str(exited.value)
        assert str(tmp_path / "crasher.log") in str(exited.value)
        with pytest.raises(DevClusterError, match="sleeper did not become ready") as late:
            await ProcessSupervisor(grace_s=1.0).wait_until(
                lambda: None,
                deadline=anyio.current_time(),
                waiting_for=supervisor.nodes[0],
                what="become ready",
            )
        assert late.value.check is DevClusterCheck.STARTUP_TIMEOUT
    finally:
        await supervisor.stop()


@pytest.mark.anyio
async def test_cluster_start_names_the_node_that_failed_and_keeps_its_logs(
    tmp_path: Path,
) -> None:
    # An "interpreter" that fails the way a broken node would: the whole start
    # path runs (data directory, release, configs) up to the keys node.
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'node refused to boot' >&2\nexit 7\n")
    broken.chmod(0o755)
    data_dir = tmp_path / "dev"
    settings = DevClusterSettings(
        data_dir=data_dir,
        port=0,
        api_key=API_KEY,
        engine=EngineKind.SCRIPTED,
        python=str(broken),
        startup_timeout_s=120,
    )
    with anyio.fail_after(150), pytest.raises(NodeExited) as failed:
        async with DevCluster(settings):
            pytest.fail("a cluster whose keys node cannot start is not serving")
    layout = ClusterLayout(data_dir)
    assert failed.value.node == KEYS_NODE and failed.value.returncode == 7
    assert str(layout.node_log(KEYS_NODE)) in str(failed.value)
    assert "node refused to boot" in layout.node_console(KEYS_NODE).read_text()
    # Written before the node started, and kept for reading after the failure.
    assert tomllib.loads(layout.node_config(KEYS_NODE).read_text())["node"] == KEYS_NODE
    assert tomllib.loads(layout.tenants.read_text())["tenants"][0]["key_sha256"] == (
        api_key_sha256(API_KEY)
    )
    for seed in (layout.pki_seed_file, layout.tpm_seed_file(KEYS_NODE), layout.provider_key):
        assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    assert not layout.node_config(INGRESS_NODE).exists()


def test_default_model_id_is_the_demo_models() -> None:
    assert DEMO_MODEL_ID == "smollm2-135m-instruct"


# -- the whole cluster ------------------------------------------------------------------


def _read_lines(process: subprocess.Popen[bytes], count: int, timeout: float) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    buffer = b""
    while len(lines) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {lines} within {timeout} s"
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(process.stdout.fileno(), 4096)
        assert chunk, f"stdout closed after {lines} (exit {process.poll()})"
        buffer += chunk
        while b"\n" in buffer and len(lines) < count:
            line, buffer = buffer.split(b"\n", 1)
            lines.append(line.decode())
    assert buffer == b"", "more than the five lines on stdout"
    return lines


def test_dev_cluster_serves_models_over_tls_and_stops_on_sigint(tmp_path: Path) -> None:
    data_dir = tmp_path / "dev"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "nodes.cli", "dev", "--engine", "scripted", "--port", "0"),
            *("--inference-nodes", "2", "--data-dir", str(data_dir)),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "dev.stderr").open("wb"),
    )
    try:
        lines = _read_lines(process, 5, timeout=240)
        labels = ["ingress", "api key", "tls cert", "attestation root", "tlog key"]
        assert [line.split(": ", 1)[0] for line in lines] == labels
        url, api_key, cert, root, tlog_key = (line.split(": ", 1)[1] for line in lines)
        assert url.startswith("https://127.0.0.1:") and api_key.startswith("sk-mantle-")
        assert Path(root) == data_dir / "pins" / "attestation-root.pem"
        assert Path(tlog_key) == data_dir / "pins" / "log-key.pub.pem"
        assert Path(cert).is_file()

        context = ssl.create_default_context(cafile=cert)
        request = urllib.request.Request(
            url + "/v1/models", headers={"Authorization": f"Bearer {api_key}"}
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            listing = json.loads(response.read())
        assert lists_model(listing, "scripted", 2), listing
        assert process.poll() is None
        # Each node removes its ready.json when it drains: read the pids now.
        pids = [
            json.loads(ClusterLayout(data_dir).ready_file(name).read_text())["pid"]
            for name in (KEYS_NODE, INGRESS_NODE, "inference-1", "inference-2")
        ]

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert process.stdout is not None and process.stdout.read() == b""
        # Every node it started is gone.
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- the model provider's part, against a real key vault --------------------------------


def test_sealed_model_and_imported_key_open_on_an_attested_inference_node(
    tmp_path: Path,
) -> None:
    from _dev_keys_node import FAKE_GGUF, MODEL, KeysNodeKit

    kit = KeysNodeKit.create(tmp_path)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            port = await group.start(kit.serve)
            info = await kit.provision(port)
            group.cancel_scope.cancel()
        assert info.plaintext_length == len(FAKE_GGUF)
        assert kit.imports == [MODEL]
        # The key the keys node now holds opens the sealed weights on an attested
        # inference node of the release, and the provider's weights come out.
        assert kit.released_weights(MODEL) == FAKE_GGUF

    anyio.run(main, backend="trio")
    assert kit.layout.sealed_model(MODEL).read_bytes()[:8] == b"MNTLSEAL"
    assert FAKE_GGUF[4:100] not in kit.layout.sealed_model(MODEL).read_bytes()
