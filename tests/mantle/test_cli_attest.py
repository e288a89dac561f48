"""``mantle attest inspect`` and ``mantle-sim tpm`` end to end, through files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mantle.cli import main as mantle_main
from simulations.cli import main as sim_main

T0 = 1_760_000_000_000
PCR4_DIGEST = "ab" * 48


def sim(argv: list[str]) -> int:
    return sim_main(argv)


@pytest.fixture
def simulated(tmp_path: Path) -> dict[str, Path]:
    root, document, policy = tmp_path / "root.pem", tmp_path / "doc.cbor", tmp_path / "policy.json"
    assert sim(["tpm", "root", "--seed", "cli", "-o", str(root)]) == 0
    argv = [
        "tpm", "attest", "--seed", "cli", "--nonce", "0a0b", "--public-key", "11" * 32,
        "--user-data", "cafe", "--pcr", f"4={PCR4_DIGEST}", "--timestamp-ms", str(T0),
        "--policy-out", str(policy), "-o", str(document),
    ]  # fmt: skip
    assert sim(argv) == 0
    return {"root": root, "document": document, "policy": policy, "dir": tmp_path}


def inspect(paths: dict[str, Path], *extra: str) -> list[str]:
    return ["attest", "inspect", str(paths["document"]), "--root", str(paths["root"]), *extra]


def test_simulated_document_verifies_with_every_check(
    simulated: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = inspect(
        simulated, "--nonce", "0a0b", "--public-key", "11" * 32, "--max-age", "5",
        "--at", str(T0 + 1000), "--policy", str(simulated["policy"]),
    )  # fmt: skip
    assert mantle_main(argv) == 0
    out = capsys.readouterr().out
    assert "verdict: VERIFIED" in out
    assert "module_id: sim-" in out
    assert "release: simulated" in out
    assert "nonce: 0a0b (2 bytes)" in out
    assert "nitrotpm_pcrs:" in out


def test_attest_is_reproducible_from_seed_and_time(simulated: dict[str, Path]) -> None:
    again = simulated["dir"] / "again.cbor"
    argv = [
        "tpm", "attest", "--seed", "cli", "--nonce", "0a0b", "--public-key", "11" * 32,
        "--user-data", "cafe", "--pcr", f"4={PCR4_DIGEST}", "--timestamp-ms", str(T0),
        "-o", str(again),
    ]  # fmt: skip
    assert sim(argv) == 0
    assert again.read_bytes() == simulated["document"].read_bytes()


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        (["--nonce", "0a0c", "--at", str(T0)], "nonce"),
        (["--public-key", "12" * 32, "--at", str(T0)], "bound_key"),
        (["--max-age", "1", "--at", str(T0 + 2000)], "freshness"),
        (["--at", str(T0 + 40 * 86_400_000)], "chain_validity"),
    ],
)
def test_failed_checks_exit_nonzero_and_are_named(
    simulated: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str], check: str
) -> None:
    assert mantle_main(inspect(simulated, *extra)) == 1
    out = capsys.readouterr().out
    assert f"verdict: REJECTED (check: {check})" in out
    assert "fields (NOT verified):" in out


def test_policy_mismatch_is_named(
    simulated: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy = json.loads(simulated["policy"].read_text())
    policy["releases"][0]["pcrs"]["4"] = "cd" * 48
    other = simulated["dir"] / "other.json"
    other.write_text(json.dumps(policy))
    assert mantle_main(inspect(simulated, "--at", str(T0), "--policy", str(other))) == 1
    assert "check: pcr_policy" in capsys.readouterr().out


def test_foreign_root_and_tampering_are_named(
    simulated: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = simulated["dir"] / "foreign.pem"
    assert sim(["tpm", "root", "--seed", "someone-else", "-o", str(foreign)]) == 0
    argv = [
        "attest",
        "inspect",
        str(simulated["document"]),
        "--root",
        str(foreign),
        "--at",
        str(T0),
    ]
    assert mantle_main(argv) == 1
    assert "check: chain_root" in capsys.readouterr().out
    data = bytearray(simulated["document"].read_bytes())
    data[-5] ^= 0x10
    simulated["document"].write_bytes(bytes(data))
    assert mantle_main(inspect(simulated, "--at", str(T0))) == 1
    assert "check: signature" in capsys.readouterr().out


def test_unusable_inputs_exit_2(
    simulated: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad_policy = simulated["dir"] / "bad.json"
    bad_policy.write_text("{}")
    assert mantle_main(inspect(simulated, "--policy", str(bad_policy))) == 2
    missing = [
        "attest",
        "inspect",
        str(simulated["dir"] / "nope"),
        "--root",
        str(simulated["root"]),
    ]
    assert mantle_main(missing) == 2
    not_pem = [
        "attest",
        "inspect",
        str(simulated["document"]),
        "--root",
        str(simulated["document"]),
    ]
    assert mantle_main(not_pem) == 2
    capsys.readouterr()


def test_bad_max_age_is_an_argument_error_not_a_crash(
    simulated: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit) as caught:
            mantle_main(inspect(simulated, "--max-age", bad))
        assert caught.value.code == 2
    capsys.readouterr()


def test_oversized_document_is_rejected_by_size_before_decoding(
    simulated: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    document = simulated["document"].read_bytes()
    simulated["document"].write_bytes(document + b"\x00" * (16 * 1024))
    assert mantle_main(inspect(simulated, "--at", str(T0))) == 1
    assert "check: size" in capsys.readouterr().out


def test_sim_attest_rejects_bad_arguments(tmp_path: Path) -> None:
    out = str(tmp_path / "x.cbor")
    for bad in (
        ["--pcr", "4=abcd"],
        ["--pcr", "24=" + "ab" * 48],
        ["--nonce", "zz"],
        ["--nonce", "00" * 1025],
    ):
        with pytest.raises(SystemExit):
            sim(["tpm", "attest", "--seed", "s", *bad, "-o", out])
    # Before the simulated PKI's root: an error exit, not a traceback.
    assert sim(["tpm", "attest", "--seed", "s", "--timestamp-ms", "0", "-o", out]) == 1


def test_genuine_aws_documents_verify_as_of_their_time(
    test_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((test_data / "nitro" / "manifest.json").read_text())
    root = str(test_data / "nitro" / "aws_nitro_root.pem")
    for entry in manifest["documents"]:
        path = str(test_data / "nitro" / entry["file"])
        status = mantle_main(
            ["attest", "inspect", path, "--root", root, "--at", str(entry["timestamp_ms"])]
        )
        assert status == (0 if entry["expect"] == "accept" else 1), entry["file"]
    capsys.readouterr()
    debug = next(e for e in manifest["documents"] if e["expect"] == "accept" and e["debug"])
    path = str(test_data / "nitro" / debug["file"])
    assert (
        mantle_main(["attest", "inspect", path, "--root", root, "--at", str(debug["timestamp_ms"])])
        == 0
    )
    assert "debug mode: yes" in capsys.readouterr().out
    # Without --at the short-lived signing certificate has long expired.
    assert mantle_main(["attest", "inspect", path, "--root", root]) == 1
    assert "check: chain_validity" in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert mantle_main([]) == 2
    assert "attest" in capsys.readouterr().out
