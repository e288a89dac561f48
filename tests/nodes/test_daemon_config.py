"""node.toml: the schema's rules, and hostile files that must end in a typed error
naming the key, never quoting the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.daemon.config import (
    Address,
    ConfigCheck,
    ConfigError,
    EngineKind,
    TpmBackend,
    load_config,
    parse_address,
)

CANARY = "canary-9f3e-secret-value"

BASE = """
node = "keys-1"
roles = ["keys"]
data_dir = "state/keys-1"

[tpm]
backend = "simulated"
pki_seed_file = "pki.seed"
seed_file = "keys-1.seed"

[release]
bundle = "release"
install_root = "/abs/install"

[trust]
attestation_root = "pins/root.pem"
release_root = "pins/root.json"
log_key = "pins/log-key.pem"

[link]
listen = "127.0.0.1:0"
peers = [{ node = "ingress-1", address = "127.0.0.1:7001" }]

[keys]
listen = "127.0.0.1:0"
"""

INGRESS = '[ingress]\nlisten = "127.0.0.1:0"\ntenants = "t.toml"\ntlog = "tlog.sqlite"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    error = caught.value
    assert CANARY not in str(error)
    assert error.__context__ is None and error.__cause__ is None
    return error


def test_a_keys_node_parses_with_paths_against_the_config_dir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.node == "keys-1"
    assert config.roles == frozenset({"keys"})
    assert config.data_dir == tmp_path / "state/keys-1"
    assert config.release.install_root == Path("/abs/install")
    assert config.tpm.backend is TpmBackend.SIMULATED
    assert config.tpm.seed_file == tmp_path / "keys-1.seed"
    assert config.keys is not None and config.keys.listen == Address("127.0.0.1", 0)
    assert config.link.peers[0].address == Address("127.0.0.1", 7001)
    assert config.inference is None and config.ingress is None
    assert config.drain_deadline_s == 30.0


def test_an_inference_node_with_scripted_engine(tmp_path: Path) -> None:
    text = BASE.replace('roles = ["keys"]', 'roles = ["inference"]').replace(
        '[keys]\nlisten = "127.0.0.1:0"\n',
        '[inference]\nmodel = "m/tiny"\nengine = "scripted"\nscheduler_node = "ingress-1"\n'
        "slots = 2\n",
    )
    config = load_config(write(tmp_path, text))
    assert config.inference is not None
    assert config.inference.engine is EngineKind.SCRIPTED and config.inference.slots == 2


@pytest.mark.parametrize(
    ("edit", "check", "key"),
    [
        (
            lambda t: t + f'\nsecret_typo = "{CANARY}"\n',
            ConfigCheck.UNKNOWN_KEY,
            "keys.secret_typo",
        ),
        (
            lambda t: t.replace("[tpm]\n", f'[tpm]\nsead_file = "{CANARY}"\n'),
            ConfigCheck.UNKNOWN_KEY,
            "tpm.sead_file",
        ),
        (lambda t: t.replace('node = "keys-1"', f'node = "{CANARY} x"'), ConfigCheck.VALUE, "node"),
        (
            lambda t: t.replace('roles = ["keys"]', 'roles = ["keys", "keys"]'),
            ConfigCheck.DUPLICATE,
            "roles[1]",
        ),
        (lambda t: t.replace('roles = ["keys"]', "roles = []"), ConfigCheck.VALUE, "roles"),
        (
            lambda t: t.replace('roles = ["keys"]', 'roles = ["admin"]'),
            ConfigCheck.VALUE,
            "roles[0]",
        ),
        (
            lambda t: t.replace('roles = ["keys"]', 'roles = ["keys", "ingress"]'),
            ConfigCheck.ROLE_SECTION,
            "ingress",
        ),
        (
            lambda t: t.replace('roles = ["keys"]', 'roles = ["ingress"]') + INGRESS,
            ConfigCheck.ROLE_SECTION,
            "keys",
        ),
        (
            lambda t: t.replace('backend = "simulated"', 'backend = "tpm2"'),
            ConfigCheck.NOT_APPLICABLE,
            "tpm.pki_seed_file",
        ),
        (
            lambda t: t.replace('backend = "simulated"', f'backend = "{CANARY}"'),
            ConfigCheck.VALUE,
            "tpm.backend",
        ),
        (
            lambda t: t.replace('"127.0.0.1:7001"', f'"{CANARY}:7001:1"'),
            ConfigCheck.ADDRESS,
            "link.peers[0].address",
        ),
        (
            lambda t: t.replace('"127.0.0.1:7001"', '"127.0.0.1:0"'),
            ConfigCheck.ADDRESS,
            "link.peers[0].address",
        ),
        (
            lambda t: t.replace('"127.0.0.1:7001"', '"127.0.0.1:65536"'),
            ConfigCheck.ADDRESS,
            "link.peers[0].address",
        ),
        (
            lambda t: t.replace('"127.0.0.1:7001"', '"127.1:7001"'),
            ConfigCheck.ADDRESS,
            "link.peers[0].address",
        ),
        (
            lambda t: t.replace('"127.0.0.1:7001"', '"127.0.0.1: 7001"'),
            ConfigCheck.ADDRESS,
            "link.peers[0].address",
        ),
        (
            lambda t: t.replace('"127.0.0.1:7001"', '"127.0.0.1:+701"'),
            ConfigCheck.ADDRESS,
            "link.peers[0].address",
        ),
        (
            lambda t: t.replace('node = "ingress-1"', 'node = "keys-1"'),
            ConfigCheck.REFERENCE,
            "link.peers[0].node",
        ),
        (
            lambda t: t.replace('data_dir = "state/keys-1"', "data_dir = 7"),
            ConfigCheck.TYPE,
            "data_dir",
        ),
        (
            lambda t: t.replace('data_dir = "state/keys-1"', 'data_dir = ""'),
            ConfigCheck.PATH,
            "data_dir",
        ),
        (
            lambda t: t.replace('log_key = "pins/log-key.pem"\n', ""),
            ConfigCheck.MISSING,
            "trust.log_key",
        ),
        (
            lambda t: t + "drain_deadline_s = nan\n",
            ConfigCheck.UNKNOWN_KEY,
            "keys.drain_deadline_s",
        ),
        (lambda t: "drain_deadline_s = nan\n" + t, ConfigCheck.VALUE, "drain_deadline_s"),
        (lambda t: "drain_deadline_s = true\n" + t, ConfigCheck.TYPE, "drain_deadline_s"),
        (lambda t: f'x = "{CANARY}\n' + t, ConfigCheck.SYNTAX, "config"),
    ],
)
def test_hostile_configs_name_the_key_not_the_value(
    tmp_path: Path, edit: object, check: ConfigCheck, key: str
) -> None:
    error = refused(tmp_path, edit(BASE))  # type: ignore[operator]
    assert error.check is check
    assert error.key == key
    assert key in str(error)


def test_inference_section_rules(tmp_path: Path) -> None:
    inference = BASE.replace('roles = ["keys"]', 'roles = ["inference"]').replace(
        '[keys]\nlisten = "127.0.0.1:0"\n',
        '[inference]\nmodel = "m"\nengine = "llama"\nscheduler_node = "ingress-1"\nslots = 1\n'
        'sealed_model = "m.sealed"\nkeys_address = "keys.internal:7002"\n',
    )
    config = load_config(write(tmp_path, inference))
    assert config.inference is not None
    assert config.inference.keys_address == Address("keys.internal", 7002)
    for edit, check, key in (
        (("slots = 1", "slots = 0"), ConfigCheck.VALUE, "inference.slots"),
        (("slots = 1", "slots = true"), ConfigCheck.TYPE, "inference.slots"),
        (("slots = 1", "slots = 1.5"), ConfigCheck.TYPE, "inference.slots"),
        (
            ('"ingress-1"\nslots', '"elsewhere"\nslots'),
            ConfigCheck.REFERENCE,
            "inference.scheduler_node",
        ),
        (
            ('engine = "llama"', 'engine = "scripted"'),
            ConfigCheck.NOT_APPLICABLE,
            "inference.sealed_model",
        ),
        (('sealed_model = "m.sealed"\n', ""), ConfigCheck.MISSING, "inference.sealed_model"),
        (('model = "m"', 'model = "../m"'), ConfigCheck.VALUE, "inference.model"),
    ):
        error = refused(tmp_path, inference.replace(*edit))
        assert (error.check, error.key) == (check, key)


def test_addresses_parse_strictly() -> None:
    assert parse_address("[::1]:8443", "k", listen=False) == Address("::1", 8443)
    assert str(Address("::1", 8443)) == "[::1]:8443"
    assert parse_address("node-1.cluster.local:1", "k", listen=False).port == 1
    assert parse_address("0.0.0.0:0", "k", listen=True).port == 0
    for bad in (
        "::1:80",
        "[::1]80",
        "[1.2.3.4]:80",
        "host:",
        ":80",
        "a..b:1",
        "-a:1",
        "1.2.3.4:08080x",
    ):
        with pytest.raises(ConfigError) as caught:
            parse_address(bad, "k", listen=True)
        assert caught.value.check is ConfigCheck.ADDRESS


def test_unreadable_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.toml")
    assert caught.value.check is ConfigCheck.FILE
    big = write(tmp_path, BASE + "#" * (300 * 1024))
    with pytest.raises(ConfigError) as caught:
        load_config(big)
    assert caught.value.check is ConfigCheck.FILE
    (tmp_path / "bin.toml").write_bytes(b'node = "\xff"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "bin.toml")
    assert caught.value.check is ConfigCheck.SYNTAX


def test_ingress_queue_limits_are_optional_and_checked(tmp_path: Path) -> None:
    ingress_node = BASE.replace('roles = ["keys"]', 'roles = ["ingress"]').replace(
        '[keys]\nlisten = "127.0.0.1:0"\n', ""
    )
    config = load_config(write(tmp_path, ingress_node + INGRESS))
    assert config.ingress is not None
    assert config.ingress.tenants == tmp_path / "t.toml"
    assert (config.ingress.max_queued, config.ingress.max_queued_per_tenant) == (None, None)
    limited = INGRESS + "max_queued = 4\nmax_queued_per_tenant = 2\n"
    config = load_config(write(tmp_path, ingress_node + limited))
    assert config.ingress is not None
    assert (config.ingress.max_queued, config.ingress.max_queued_per_tenant) == (4, 2)
    for extra, check, key in (
        ("max_queued = 0\n", ConfigCheck.VALUE, "ingress.max_queued"),
        ('max_queued = "4"\n', ConfigCheck.TYPE, "ingress.max_queued"),
        (
            "max_queued = 2\nmax_queued_per_tenant = 3\n",
            ConfigCheck.REFERENCE,
            "ingress.max_queued_per_tenant",
        ),
    ):
        error = refused(tmp_path, ingress_node + INGRESS + extra)
        assert (error.check, error.key) == (check, key)
