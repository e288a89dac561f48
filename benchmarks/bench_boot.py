"""Measured boot with the running-code check: files hashed, milliseconds.

Boot now hashes every file of the installed Mantle packages (the directories
the process imports from) against the release's source manifest, and checks
the node image (its file, its signed values, the machine's PCR 4, 7, 12).
This measures, as medians of several runs:

1. the source-tree check alone (``verify_source_tree``: walk, hash, compare),
   against plain ``hashlib.file_digest`` over the same files in the same run
   (the floor: reading and hashing, nothing else);
2. a whole ``measured_boot`` of a node (metadata, log proof, artifacts, node
   image, source tree, PCRs, first attestation) on the simulated NitroTPM,
   and the share the source-tree check takes of it.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_boot.py [--reps N]``
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _release_kit import NOW, ReleaseKit

from nodes.boot import measured_boot
from nodes.random import SystemRandom
from nodes.release import SourceTree, running_source_manifest, verify_source_tree
from protocol.release import parse_source_manifest
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=41)
    reps = parser.parse_args().reps

    tree = SourceTree.running()
    manifest = running_source_manifest()
    listed = parse_source_manifest(manifest)
    paths = [tree.path_of(relative) for relative in listed]
    size_kb = sum(path.stat().st_size for path in paths) / 1024

    def plain_hashlib() -> None:
        for path in paths:
            with path.open("rb") as handle:
                hashlib.file_digest(handle, "sha384")

    def source_check() -> None:
        verify_source_tree(manifest, SourceTree.running())

    source_check()  # warm the page cache
    plain_hashlib()
    t_check: list[float] = []
    t_plain: list[float] = []
    for i in range(reps):
        order = [(source_check, t_check), (plain_hashlib, t_plain)]
        if i % 2:
            order.reverse()
        for fn, sink in order:
            start = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        kit = ReleaseKit(install_root=Path(tmp) / "install")
        files = kit.publish(1, models={"smol": b"GGUF" + bytes(4096)})
        tpm = SimulatedNitroTPM.from_seed(
            "bench-boot", clock=ManualClock(int(NOW.timestamp() * 1000))
        )
        inputs = kit.boot_inputs(files, "smol")
        t_boot: list[float] = []
        for _ in range(reps):
            tpm.reboot()
            start = time.perf_counter()
            measured_boot(inputs, tpm=tpm, random=SystemRandom(), now=NOW)
            t_boot.append(time.perf_counter() - start)

    check, plain, boot = _median_ms(t_check), _median_ms(t_plain), _median_ms(t_boot)
    print(f"source tree: {len(listed)} files, {size_kb:.0f} KiB (medians of {reps} runs)")
    print(f"  source-tree check (walk, hash, compare)   {check:8.2f} ms")
    print(
        f"  plain hashlib.file_digest, same files     {plain:8.2f} ms   ratio {check / plain:.2f}x"
    )
    print(
        f"  whole measured boot (simulated NitroTPM)  {boot:8.2f} ms   check = {check / boot:.0%}"
    )


if __name__ == "__main__":
    main()
