"""``mantle verify`` and ``mantle chat`` against a real development cluster.

One scripted-engine cluster (``nodes.devcluster.DevCluster``: a keys node,
an ingress node and an inference node, each its own process on a simulated
NitroTPM) serves the module. ``mantle verify`` must print what it verified
(release version, module id, PCRs, the TLS key binding, that the PKI is
simulated) and exit 0; with another attestation root, another certificate,
another release root or a plain URL it must exit 1 naming the failed check;
without a pin it must refuse to start (exit 2). ``mantle chat`` streams the
scripted answer after the same checks, and sends nothing when they fail.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from mantle import cli
from nodes import cli as node_cli
from nodes.devcluster import ClusterLayout, DevCluster, DevClusterSettings, EngineKind
from simulations import cli as sim_cli

START_TIMEOUT_S = 120.0
#: Generous: the machine is shared; this catches a hang, not slowness.
COMMAND_TIMEOUT_S = 60.0


@dataclass
class Cluster:
    cluster: DevCluster
    layout: ClusterLayout
    base: Path

    @property
    def url(self) -> str:
        return self.cluster.url

    def trust(self, state: Path, **overrides: Path) -> list[str]:
        """The options of a user who holds the cluster's pins and certificate."""
        options = {
            "--pins": self.layout.pins_dir,
            "--tls-cert": self.cluster.tls_cert,
            "--release-dir": self.layout.release_dir,
            "--state": state,
            **{f"--{name.replace('_', '-')}": path for name, path in overrides.items()},
        }
        return [item for name, path in options.items() for item in (name, str(path))]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cli-cluster")
    settings = DevClusterSettings(
        data_dir=base / "dev",
        port=0,
        inference_nodes=1,
        engine=EngineKind.SCRIPTED,
        startup_timeout_s=START_TIMEOUT_S,
    )
    running = DevCluster(settings)
    try:
        anyio.run(running.start, backend="trio")
        yield Cluster(running, ClusterLayout(running.data_dir), base)
    finally:
        anyio.run(running.stop, backend="trio")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    started = time.monotonic()
    status = cli.main(argv)
    assert time.monotonic() - started < COMMAND_TIMEOUT_S
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return status, captured.out, captured.err


def _other_certificate(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(Encoding.PEM))
    return path


def test_verify_prints_what_it_verified(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(["verify", cluster.url, *cluster.trust(tmp_path / "t.json")], capsys)
    assert status == 0, out
    lines = out.splitlines()
    assert lines[-1] == "verdict: VERIFIED"
    assert f"ingress: {cluster.url}" in lines
    assert any(line.startswith("release: version 1 (floor 1)") for line in lines)
    module = next(line for line in lines if line.startswith("module id: "))
    assert module.removeprefix("module id: ").startswith("sim-")
    # The PCRs the release pins are shown: the node image's and Mantle's own.
    shown = dict(re.findall(r"^\s+(\d+): ([0-9a-f]{96})$", out, re.MULTILINE))
    assert {"4", "7", "8", "12", "13", "14"} <= set(shown)
    spki = (
        x509.load_pem_x509_certificate(cluster.cluster.tls_cert.read_bytes())
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    assert f"SPKI sha256 {hashlib.sha256(spki).hexdigest()}" in out
    assert any(line.startswith("simulated: yes") for line in lines)
    # The release floor is now kept in the user's trust state.
    assert json.loads((tmp_path / "t.json").read_bytes())["release_floor"] == 1


def test_verify_with_another_attestation_root_names_the_chain(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_root = tmp_path / "other-root.pem"
    assert sim_cli.main(["tpm", "root", "--seed", "another cloud", "-o", str(other_root)]) == 0
    capsys.readouterr()
    trust = cluster.trust(tmp_path / "t.json", root=other_root)
    status, out, _ = _run(["verify", cluster.url, *trust], capsys)
    assert status == 1
    assert out.startswith("verdict: REFUSED (check: attestation.chain_root)"), out


def test_verify_with_another_certificate_names_the_tls_pin(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = cluster.trust(tmp_path / "t.json", tls_cert=_other_certificate(tmp_path / "c.pem"))
    status, out, _ = _run(["verify", cluster.url, *trust], capsys)
    assert status == 1
    assert out.startswith("verdict: REFUSED (check: tls.cert)"), out


def test_verify_with_another_release_root_names_the_release(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A release root of the user's own, whose signers signed nothing here.
    other_root = tmp_path / "root.json"
    init = ["release", "init", "--root", str(other_root), "--threshold", "1"]
    assert node_cli.main(init) == 0
    capsys.readouterr()
    trust = cluster.trust(tmp_path / "t.json", release_root=other_root)
    status, out, _ = _run(["verify", cluster.url, *trust], capsys)
    assert status == 1
    assert out.startswith("verdict: REFUSED (check: release."), out
    assert not (tmp_path / "t.json").exists()  # no floor taken from a refused release


def test_verify_refuses_a_plain_url(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = cluster.url.replace("https://", "http://")
    status, out, _ = _run(["verify", plain, *cluster.trust(tmp_path / "t.json")], capsys)
    assert status == 1
    assert out.startswith("verdict: REFUSED (check: ingress.url)"), out


def test_verify_without_a_pin_does_not_start(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["verify", cluster.url, "--tls-cert", str(cluster.cluster.tls_cert)]
    status, out, err = _run([*argv, "--state", str(tmp_path / "t.json")], capsys)
    assert status == 2 and out == ""
    assert "no attestation root (--root) pinned" in err


def test_chat_streams_an_answer_after_the_checks(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = cluster.trust(tmp_path / "t.json")
    argv = ["chat", cluster.url, *trust, "--api-key", cluster.cluster.api_key]
    status, out, err = _run([*argv, "--max-tokens", "6", "name three rivers"], capsys)
    assert status == 0, err
    assert len(out.split()) == 6  # the scripted engine's words, one per token
    assert "finish: length" in err


def test_chat_refused_by_a_check_prints_no_answer(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = cluster.trust(tmp_path / "t.json", tls_cert=_other_certificate(tmp_path / "c.pem"))
    argv = ["chat", cluster.url, *trust, "--api-key", cluster.cluster.api_key, "hello"]
    status, out, err = _run(argv, capsys)
    assert status == 1 and out == ""
    assert "check: tls.cert" in err


def test_chat_with_a_wrong_api_key_names_the_status(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["chat", cluster.url, *cluster.trust(tmp_path / "t.json"), "--api-key", "sk-wrong"]
    status, _, err = _run([*argv, "CANARY-cli-5d1e"], capsys)
    assert status == 1
    assert "HTTP 401" in err and "CANARY" not in err
