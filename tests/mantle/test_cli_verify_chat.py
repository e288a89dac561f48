"""``mantle verify`` and ``mantle chat`` against a real development cluster.

One scripted-engine cluster (``nodes.devcluster.DevCluster``: a keys node,
an ingress node and an inference node, each its own process on a simulated
NitroTPM) serves the module. ``mantle verify`` must print what it verified
(release version, module id, PCRs, the TLS key binding, that the PKI is
simulated, and the inference nodes: name, module id, PCRs, receipt key
binding) and exit 0; with another attestation root, another certificate,
another release root or a plain URL it must exit 1 naming the failed check;
without a pin or an API key it must refuse to start (exit 2). ``mantle chat``
streams the scripted answer, sealed to the verified nodes, and sends nothing
when a check fails.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_cluster import Cluster, run_cli, start_cluster
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from nodes import cli as node_cli
from simulations import cli as sim_cli


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("cli-cluster")) as running:
        yield running


_run = run_cli


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


def test_verify_prints_the_verified_inference_nodes(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(["verify", cluster.url, *cluster.trust(tmp_path / "t.json")], capsys)
    assert status == 0, out
    nodes = out[out.index("\nmodel: ") :]
    assert nodes.startswith("\nmodel: scripted; nodes verified against release 1")
    assert "\nnode: inference-1\n" in nodes
    assert re.search(r"^  module id: sim-", nodes, re.MULTILINE)
    shown = dict(re.findall(r"^ {4,5}(\d+): ([0-9a-f]{96})$", nodes, re.MULTILINE))
    assert {"4", "7", "12", "13", "14"} <= set(shown)
    assert re.search(r"^  receipt key binding: [0-9a-f]{64} ", nodes, re.MULTILINE)
    assert "node left out" not in nodes


def test_verify_of_an_unlisted_model_names_the_check(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = cluster.trust(tmp_path / "t.json")
    status, out, _ = _run(["verify", cluster.url, *trust, "-m", "not-released"], capsys)
    assert status == 1
    assert "verdict: REFUSED (check: attestation.model)" in out
    assert "verdict: VERIFIED" not in out


def test_verify_without_an_api_key_does_not_start(
    cluster: Cluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MANTLE_API_KEY", raising=False)
    trust = cluster.trust(tmp_path / "t.json")[:-2]  # without --api-key
    status, out, err = _run(["verify", cluster.url, *trust], capsys)
    assert status == 2 and out == ""
    assert "no API key" in err


def test_chat_streams_an_answer_sealed_to_the_verified_nodes(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["chat", cluster.url, *cluster.client(tmp_path / "t.json")]
    status, out, err = _run([*argv, "--max-tokens", "6", "CANARY-cli-7a3f rivers"], capsys)
    assert status == 0, err
    assert len(out.split()) == 6  # the scripted engine's words, one per token
    line = next(line for line in err.splitlines() if line.startswith("verified: "))
    assert line.startswith("verified: node inference-1 (sim-")
    assert "release 1" in line and "model scripted" in line
    assert "CANARY" not in err
    # The walk kept the log's tree head in the user's trust state.
    assert json.loads((tmp_path / "t.json").read_bytes())["release_floor"] == 1


def test_chat_refused_by_a_check_prints_no_answer(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = cluster.client(tmp_path / "t.json", tls_cert=_other_certificate(tmp_path / "c.pem"))
    status, out, err = _run(["chat", cluster.url, *options, "hello"], capsys)
    assert status == 1 and out == ""
    assert "check: tls.cert" in err


def test_chat_with_another_attestation_root_names_the_check(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_root = tmp_path / "other-root.pem"
    assert sim_cli.main(["tpm", "root", "--seed", "another cloud", "-o", str(other_root)]) == 0
    capsys.readouterr()
    options = cluster.client(tmp_path / "t.json", root=other_root)
    status, out, err = _run(["chat", cluster.url, *options, "CANARY-cli-0b9e"], capsys)
    assert status == 1 and out == ""
    assert "check: attestation.node.document/chain_root" in err and "CANARY" not in err


def test_chat_with_a_wrong_api_key_names_the_status(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["chat", cluster.url, *cluster.client(tmp_path / "t.json"), "--api-key", "sk-wrong"]
    status, _, err = _run([*argv, "CANARY-cli-5d1e"], capsys)
    assert status == 1
    assert "HTTP 401" in err and "CANARY" not in err
