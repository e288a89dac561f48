"""A dev release, pins and simulated-TPM seeds on disk, and ``node.toml`` files for them,
so tests run ``mantle-node run`` as a real subprocess against a real release."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nodes.daemon.tpm import ReleaseAttestationTrust
from nodes.release import ReleaseDirectory
from protocol.attestation import TrustAnchor
from simulations.nitrotpm import SimulatedNitroPKI
from tests._release_kit import ReleaseKit

REPO = Path(__file__).resolve().parent.parent
PKI_SEED = b"daemon-test-pki-seed-0123456789abcdef"


def cluster_config(*root_pems: bytes, attestation_keys_sha256: tuple[str, ...] = ()) -> bytes:
    """A release's ``config/cluster.json`` naming these attestation roots (and
    TPM 2.0 attestation keys) as the evidence its nodes accept."""
    trust = ReleaseAttestationTrust(
        nitro_roots=frozenset(TrustAnchor.from_pem(pem).sha256 for pem in root_pems),
        tpm2_attestation_keys=frozenset(bytes.fromhex(pin) for pin in attestation_keys_sha256),
    ).table()
    return (json.dumps({"cluster": "daemon-test", "attestation_trust": trust}) + "\n").encode()


@dataclass
class DaemonKit:
    """One published release (v1) with its pins, in ``root``."""

    root: Path

    def __post_init__(self) -> None:
        self.attestation_root = SimulatedNitroPKI(PKI_SEED).root_pem()
        self.kit = ReleaseKit(
            install_root=self.root / "install", config=cluster_config(self.attestation_root)
        )
        files = self.kit.publish(1)
        files.write_to(ReleaseDirectory(self.root / "release"))
        pins = self.root / "pins"
        pins.mkdir()
        (pins / "root.json").write_bytes(self.kit.root)
        (pins / "log-key.pem").write_bytes(
            self.kit.log_key.public_key().public_bytes(
                Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
            )
        )
        (pins / "attestation-root.pem").write_bytes(self.attestation_root)
        (self.root / "pki.seed").write_bytes(PKI_SEED)

    def node_toml(self, node: str, body: str = "", *, roles: str = '["keys"]') -> Path:
        """A config for ``node`` (its own TPM seed and data dir); ``body`` adds
        role sections. Paths are relative: they resolve against this directory."""
        (self.root / f"{node}.seed").write_bytes(f"daemon-test-tpm-{node}".encode() * 2)
        text = f"""
node = "{node}"
roles = {roles}
data_dir = "nodes/{node}"
drain_deadline_s = 5

[tpm]
backend = "simulated"
pki_seed_file = "pki.seed"
seed_file = "{node}.seed"

[release]
bundle = "release"
install_root = "install"

[trust]
attestation_root = "pins/attestation-root.pem"
release_root = "pins/root.json"
log_key = "pins/log-key.pem"

[link]
listen = "127.0.0.1:0"
{body}
"""
        path = self.root / f"{node}.toml"
        path.write_text(text)
        return path

    def data_dir(self, node: str) -> Path:
        return self.root / "nodes" / node


class Node:
    """``mantle-node run --config PATH`` as a subprocess."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nodes.cli", "run", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        self.stdout = b""
        self.stderr = b""

    def wait_ready(self, ready: Path, timeout: float = 120.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists():
                data: dict[str, object] = json.loads(ready.read_text())
                return data
            if self.process.poll() is not None:
                self.finish()
                raise AssertionError(f"node exited with {self.process.returncode}: {self.stderr!r}")
            time.sleep(0.1)
        raise AssertionError("node did not become ready in time")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 60.0) -> int:
        self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode

    def events(self) -> list[dict[str, object]]:
        """Every stderr line, each of which must be a JSON object."""
        return [json.loads(line) for line in self.stderr.decode().splitlines() if line]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def run_to_end(config: Path, timeout: float = 120.0) -> Node:
    node = Node(config)
    try:
        node.finish(timeout)
    finally:
        node.kill()
    return node


def lines(path: Path) -> Iterator[dict[str, object]]:
    for line in path.read_text().splitlines():
        yield json.loads(line)
