"""Measured boot with the running-code check: files hashed, milliseconds.

Boot now hashes every file of the installed Mantle packages (the directories
the process imports from) against the release's source manifest, and checks
the node image (its file, its signed values, the machine's PCR 4, 7, 12).
This measures, as medians of several runs:

1. the source-tree check alone (``verify_source_tree``: walk, hash, compare),
   against plain ``hashlib.file_digest`` over the same files in the same run
   (the floor: reading and hashing, nothing else);
2. the source-tree check on a copy of the tree without bytecode caches and
   with a cache of every module (``compileall``, as an image build would):
   each cache costs a compile of its source, the price of refusing planted ones;
3. a whole ``measured_boot`` of a node (metadata, log proof, artifacts, node
   image, source tree, PCRs, first attestation) on the simulated NitroTPM,
   and the share the source-tree check takes of it.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_boot.py [--reps N]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _release_kit import NOW, ReleaseKit
from _source_tree import copy_running_tree

from nodes.boot import measured_boot
from nodes.random import SystemRandom
from nodes.release import SourceTree, running_source_manifest, verify_source_tree
from protocol.release import parse_source_manifest
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _timed(fn: Callable[[], object], reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


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
        copy = copy_running_tree(Path(tmp) / "tree")
        bare = verify_source_tree(manifest, copy)
        t_bare = _timed(lambda: verify_source_tree(manifest, copy), reps)
        environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(Path(tmp) / "tree")],
            env=environment,
            check=True,
        )
        cached = verify_source_tree(manifest, copy)
        t_cached = _timed(lambda: verify_source_tree(manifest, copy), reps)

    with tempfile.TemporaryDirectory() as tmp:
        kit = ReleaseKit(install_root=Path(tmp) / "install")
        files = kit.publish(1, models={"smol": b"GGUF" + bytes(4096)})
        tpm = SimulatedNitroTPM.from_seed(
            "bench-boot", clock=ManualClock(int(NOW.timestamp() * 1000))
        )
        inputs = kit.boot_inputs(files, "smol", kit.node_state_dir(tpm))
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
    bare_ms, cached_ms = _median_ms(t_bare), _median_ms(t_cached)
    print(
        f"  check, copy without caches                {bare_ms:8.2f} ms"
        f"   {bare.files_hashed} files hashed, {bare.caches_checked} caches"
    )
    print(
        f"  check, copy with every module's cache     {cached_ms:8.2f} ms"
        f"   {cached.files_hashed} files hashed, {cached.caches_checked} caches compiled"
        f" (+{cached_ms - bare_ms:.0f} ms)"
    )


if __name__ == "__main__":
    main()
