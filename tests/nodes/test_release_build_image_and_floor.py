"""``mantle-node release build --image-measurements FILE --floor N``.

The image file is what ``nitro-tpm-pcr-compute`` printed; the built targets list
it as ``image/pcr-measurements.json`` and carry its values in the entry's
``custom`` field; ``--floor`` becomes the signed ``min_version``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from nodes.cli import main
from protocol.measurement import (
    IMAGE_MEASUREMENTS_ARTIFACT,
    PLATFORM_PCRS,
    encode_image_measurements,
)
from protocol.release import verify_release_metadata

PCRS = {index: hashlib.sha384(b"uki %d" % index).digest() for index in PLATFORM_PCRS}


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def _workspace(tmp_path: Path) -> tuple[Path, Path]:
    keys = tmp_path / "keys"
    keys.mkdir()
    assert run("release", "keygen", "--out", keys / "alice.pem") == 0
    root = tmp_path / "root.json"
    assert run("release", "init", "--root", root, "--threshold", "1") == 0
    for role in ("root", "targets"):
        assert (
            run(
                "release",
                "add-signer",
                "--root",
                root,
                "--key",
                keys / "alice.pub.pem",
                "--role",
                role,
            )
            == 0
        )
    assert run("release", "sign", root, "--key", keys / "alice.pem") == 0
    config = tmp_path / "cluster.json"
    config.write_text("{}")
    return root, keys / "alice.pem"


def test_build_lists_the_image_and_publishes_the_floor(tmp_path: Path) -> None:
    root, key = _workspace(tmp_path)
    image = tmp_path / "pcr-measurements.json"
    image.write_bytes(encode_image_measurements(PCRS))
    out = tmp_path / "targets.json"
    assert (
        run(
            "release", "build", "--out", out, "--version", "5", "--floor", "4",
            "--artifact", f"config/cluster.json={tmp_path / 'cluster.json'}",
            "--image-measurements", image,
        )
        == 0
    )  # fmt: skip
    assert run("release", "sign", out, "--key", key) == 0
    signed = json.loads(out.read_bytes())["signed"]
    assert signed["min_version"] == 4
    assert signed["targets"][IMAGE_MEASUREMENTS_ARTIFACT]["custom"] == json.loads(
        image.read_bytes()
    )
    verified = verify_release_metadata(
        root.read_bytes(), out.read_bytes(), trusted_root=root.read_bytes(),
        now=datetime.now(UTC), min_version=0,
    )  # fmt: skip
    assert dict(verified.image_measurements) == PCRS
    assert verified.min_version == 4


def test_build_refuses_a_bad_image_file_or_floor(tmp_path: Path) -> None:
    _workspace(tmp_path)
    config = f"config/cluster.json={tmp_path / 'cluster.json'}"
    image = tmp_path / "pcr-measurements.json"
    image.write_text('{"Measurements": {"HashAlgorithm": "SHA256"}}')
    assert (
        run("release", "build", "--out", tmp_path / "a.json", "--version", "1",
            "--artifact", config, "--image-measurements", image)
        == 2
    )  # fmt: skip
    image.write_bytes(encode_image_measurements(PCRS))
    assert (
        run("release", "build", "--out", tmp_path / "b.json", "--version", "1", "--floor", "2",
            "--artifact", config, "--image-measurements", image)
        == 2
    )  # fmt: skip
    # The image file listed as a plain artifact would carry no signed values.
    assert (
        run("release", "build", "--out", tmp_path / "c.json", "--version", "1",
            "--artifact", f"{IMAGE_MEASUREMENTS_ARTIFACT}={image}")
        == 2
    )  # fmt: skip
    assert not any((tmp_path / name).exists() for name in ("a.json", "b.json", "c.json"))
