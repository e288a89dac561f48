"""Attack: the operator writes ``engine = "scripted"`` into an inference node's
``node.toml`` on real hardware.

Nothing measures the engine: the node boots the release's code with its
model's digest in PCR 13, so its documents meet the model's policy, the
ingress admits it, and customers' requests are placed on it. It would then
answer every one with the scripted engine's made-up words, under an
attestation that says the release's model serves them. The scripted engine is
for development clusters on the simulated TPM (whose documents no release for
real hardware admits), so ``node.toml`` asking for it on any other backend is
refused as a configuration error naming the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.daemon.config import ConfigCheck, ConfigError, EngineKind, load_config

NODE_TOML = """
node = "inference-1"
roles = ["inference"]
data_dir = "state"

[tpm]
{tpm}

[release]
bundle = "release"
install_root = "install"

[trust]
attestation_root = "pins/root.pem"
release_root = "pins/root.json"
log_key = "pins/log-key.pem"

[link]
listen = "127.0.0.1:0"
peers = [{{ node = "ingress-1", address = "127.0.0.1:7001" }}]

[inference]
model = "smollm2-135m-instruct"
engine = "scripted"
scheduler_node = "ingress-1"
slots = 1
"""

HARDWARE = (
    'backend = "nitrotpm"',
    'backend = "tpm2"\ntcti = "swtpm:host=127.0.0.1,port=2321"',
)


@pytest.mark.parametrize("tpm", HARDWARE, ids=["nitrotpm", "tpm2"])
def test_scripted_engine_on_a_tpm_peers_admit_is_refused(tmp_path: Path, tpm: str) -> None:
    config = tmp_path / "node.toml"
    config.write_text(NODE_TOML.format(tpm=tpm))
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert (refused.value.check, refused.value.key) == (ConfigCheck.REFERENCE, "inference.engine")


def test_scripted_engine_on_the_simulated_tpm_still_parses(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        NODE_TOML.format(tpm='backend = "simulated"\npki_seed_file = "p"\nseed_file = "s"')
    )
    inference = load_config(config).inference
    assert inference is not None and inference.engine is EngineKind.SCRIPTED
