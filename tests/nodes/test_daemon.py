"""``mantle-node run`` as a real process: exit statuses, JSON-only output,
ready.json, and the drain on SIGTERM / SIGINT, on a real dev release booted on
the simulated NitroTPM."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests._daemon_kit import DaemonKit, Node, lines, run_to_end

KEYS = '[keys]\nlisten = "127.0.0.1:0"\n'
CANARY = "canary-daemon-51aa"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> DaemonKit:
    return DaemonKit(tmp_path_factory.mktemp("daemon"))


def only_json(node: Node) -> list[dict[str, object]]:
    events = node.events()  # raises if any line is not JSON
    assert all(isinstance(event, dict) and "event" in event for event in events)
    return events


def test_bad_config_exits_2_with_a_json_line_naming_the_key(kit: DaemonKit) -> None:
    config = kit.node_toml("bad-1", KEYS)
    config.write_text(config.read_text().replace("[keys]", f'[keys]\nlisen = "{CANARY}"'))
    node = run_to_end(config)
    assert node.process.returncode == 2
    (refusal,) = [e for e in only_json(node) if e["event"] == "config_refused"]
    assert refusal["check"] == "unknown_key"
    assert "keys.lisen" in str(refusal["reason"])
    assert CANARY.encode() not in node.stderr


def test_missing_config_exits_2(tmp_path: Path) -> None:
    node = run_to_end(tmp_path / "absent.toml")
    assert node.process.returncode == 2
    assert [e["check"] for e in only_json(node) if e["event"] == "config_refused"] == ["file"]


def test_boot_refused_exits_3_and_logs_the_check(kit: DaemonKit, tmp_path: Path) -> None:
    # Pins of another log: the release's log proof no longer verifies.
    other = tmp_path / "other-log-key.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    config = kit.node_toml("refused-1", KEYS)
    config.write_text(config.read_text().replace('"pins/log-key.pem"', f'"{other}"'))
    node = run_to_end(config)
    assert node.process.returncode == 3
    (refusal,) = [e for e in only_json(node) if e["event"] == "boot_refused"]
    assert refusal["check"] == "not_in_log"
    logged = list(lines(kit.data_dir("refused-1") / "node.log"))
    assert any(e["event"] == "boot_refused" for e in logged)
    assert not (kit.data_dir("refused-1") / "ready.json").exists()


def test_unusable_tpm_seed_exits_1(kit: DaemonKit) -> None:
    config = kit.node_toml("seedless-1", KEYS)
    (kit.root / "seedless-1.seed").write_bytes(b"short")
    node = run_to_end(config)
    assert node.process.returncode == 1
    (failure,) = [e for e in only_json(node) if e["event"] == "tpm_unavailable"]
    assert failure["check"] == "seed_file"


def test_keys_node_boots_reports_ready_and_drains(kit: DaemonKit) -> None:
    config = kit.node_toml("keys-1", KEYS)
    ready = kit.data_dir("keys-1") / "ready.json"
    for signum in (signal.SIGTERM, signal.SIGINT):
        # The second run restarts the same simulated machine: its counters
        # (kept in the data dir) and keyring must open again.
        node = Node(config)
        try:
            report = node.wait_ready(ready)
            assert report["node"] == "keys-1" and report["roles"] == ["keys"]
            assert report["pid"] == node.process.pid
            assert report["simulated_tpm"] is True
            assert isinstance(report["keys_port"], int) and report["keys_port"] > 0
            assert isinstance(report["link_port"], int) and report["link_port"] > 0
            assert report["https_port"] is None and report["tls_cert"] is None
            node.signal(signum)
            assert node.finish() == 0
        finally:
            node.kill()
        events = only_json(node)
        names = [e["event"] for e in events]
        assert names.index("simulated_tpm") < names.index("node_ready") < names.index("drained")
        assert not ready.exists()
    assert (kit.data_dir("keys-1") / "state" / "keyring").exists()
    logged = [e["event"] for e in lines(kit.data_dir("keys-1") / "node.log")]
    assert logged.count("node_ready") == 2
    assert json.loads((kit.data_dir("keys-1") / "state" / "simulated-tpm-nv.json").read_text())
