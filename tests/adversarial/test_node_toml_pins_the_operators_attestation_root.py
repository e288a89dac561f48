"""Attack: the operator writes its own certificate authority into a genuine node's ``node.toml``.

``node.toml`` is the operator's file and measured nowhere: a genuine ingress
or keys node booted on the genuine release, on a genuine machine, attests
exactly as its honest twin does whatever ``[trust].attestation_root`` says.
If the daemon took that pin as given, the operator would point it at a CA
of its own, sign documents showing the released registers for a machine
running anything, and the genuine node would send prompts (or release data
keys) to it. The same goes for a TPM 2.0 attestation key pinned in
``[trust].attestation_keys``: the operator holds keys in a swtpm whose
registers it sets at will.

The daemon accepts a pin only if the booted release's ``config/cluster.json``
(signed, logged, measured into PCR 14) names it, and reads that file once,
against the digest the release signed, so swapping it after boot does not
help either. Before this, ``peer_evidence_verifier`` built a verifier that
authenticated the operator's forged document.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nodes.boot import BootedNode, measured_boot
from nodes.clock import TrioClock
from nodes.daemon.config import NodeConfig, load_config
from nodes.daemon.run import boot_inputs
from nodes.daemon.tpm import TpmCheck, TpmUnavailable, open_tpm, peer_evidence_verifier
from nodes.random import SystemRandom
from protocol.attestation import AttestationError, DocumentKind
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM
from tests._daemon_kit import DaemonKit, cluster_config

OPERATOR_PKI_SEED = b"the-operators-own-ca-seed-0123456789"
KEYS = '[keys]\nlisten = "127.0.0.1:0"\n'


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> DaemonKit:
    kit = DaemonKit(tmp_path_factory.mktemp("trust"))
    (kit.root / "pins" / "operator-root.pem").write_bytes(
        SimulatedNitroPKI(OPERATOR_PKI_SEED).root_pem()
    )
    return kit


def boot(config: NodeConfig) -> BootedNode:
    """The daemon's own steps up to the peer verifier (nodes.daemon.run)."""
    for directory in (config.data_dir, config.state_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    opened = open_tpm(config, TrioClock())
    return measured_boot(
        boot_inputs(config), tpm=opened.tpm, random=SystemRandom(), now=datetime.now(UTC)
    )


def forged_document() -> bytes:
    """A document from the operator's CA showing the registers this code's image has."""
    operator_tpm = SimulatedNitroTPM(
        seed=b"operator-machine", pki=SimulatedNitroPKI(OPERATOR_PKI_SEED), clock=TrioClock()
    )
    return operator_tpm.attest(nonce=b"n" * 32, public_key=b"k" * 32)


def test_operator_root_in_node_toml_is_refused(kit: DaemonKit) -> None:
    path = kit.node_toml("keys-operator-root", KEYS)
    path.write_text(path.read_text().replace("attestation-root.pem", "operator-root.pem"))
    config = load_config(path)
    booted = boot(config)  # the node itself is genuine: its boot passes
    with pytest.raises(TpmUnavailable) as refused:
        peer_evidence_verifier(config, booted.release)
    assert refused.value.check is TpmCheck.TRUST


def test_the_release_named_root_refuses_the_forgery(kit: DaemonKit) -> None:
    config = load_config(kit.node_toml("keys-genuine-root", KEYS))
    verifier = peer_evidence_verifier(config, boot(config).release)
    with pytest.raises(AttestationError):
        verifier.authenticate(
            forged_document(), kind=DocumentKind.NITRO, now_ms=int(time.time() * 1000)
        )


def test_operator_attestation_key_in_node_toml_is_refused(kit: DaemonKit) -> None:
    ak = ec.generate_private_key(ec.SECP256R1()).public_key()
    ak_path = kit.root / "pins" / "operator-ak.pem"
    ak_path.write_bytes(ak.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    path = kit.node_toml("keys-operator-ak", KEYS)
    path.write_text(
        path.read_text().replace(
            'log_key = "pins/log-key.pem"',
            'log_key = "pins/log-key.pem"\nattestation_keys = ["pins/operator-ak.pem"]',
        )
    )
    config = load_config(path)
    with pytest.raises(TpmUnavailable) as refused:
        peer_evidence_verifier(config, boot(config).release)
    assert refused.value.check is TpmCheck.TRUST


def test_cluster_config_swapped_after_boot_is_refused(kit: DaemonKit) -> None:
    path = kit.node_toml("keys-swapped-config", KEYS)
    path.write_text(path.read_text().replace("attestation-root.pem", "operator-root.pem"))
    config = load_config(path)
    booted = boot(config)
    installed = config.release.install_root / "config" / "cluster.json"
    genuine = installed.read_bytes()
    installed.write_bytes(cluster_config(SimulatedNitroPKI(OPERATOR_PKI_SEED).root_pem()))
    try:
        with pytest.raises(TpmUnavailable) as refused:
            peer_evidence_verifier(config, booted.release)
    finally:
        installed.write_bytes(genuine)
    assert refused.value.check is TpmCheck.TRUST
