"""A copy of the running Mantle tree, and a node process started from one.

Source-tree attacks need a tree to tamper with that is not the one the test
suite itself imports: :func:`copy_running_tree` copies the installed packages
(the directories this process imports from, ``__pycache__`` left out),
:func:`boot_in_process_from` starts a separate Python process whose Mantle
packages come from such a copy, and boots a node there from files a test wrote,
and :func:`write_caches_by_importing` has a separate interpreter import from a
copy with bytecode writing on, so the caches it leaves are the genuine ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from _release_kit import NOW, ReleaseFiles, ReleaseKit

from nodes.boot import BootedNode, measured_boot
from nodes.random import SystemRandom
from nodes.release import SourceTree
from simulations.nitrotpm import SimulatedNitroTPM

REPO_ROOT = Path(__file__).resolve().parent.parent

_NODE_PROCESS = textwrap.dedent(
    """
    import json
    import sys
    from datetime import datetime
    from pathlib import Path

    from nodes.random import SystemRandom
    from nodes.boot import BootError, BootInputs, measured_boot
    from nodes.release import SourceTree
    from protocol.release import SOURCE_MANIFEST_ARTIFACT
    from simulations.clock import ManualClock
    from simulations.nitrotpm import SimulatedNitroTPM, development_image

    boot_dir = Path(sys.argv[1])
    now = datetime.fromisoformat(sys.argv[2])
    install = boot_dir / "install"
    inputs = BootInputs(
        root_metadata=(boot_dir / "root.json").read_bytes(),
        targets_metadata=(boot_dir / "targets.json").read_bytes(),
        log_proof=(boot_dir / "log-proof.json").read_bytes(),
        trusted_root=(boot_dir / "pinned-root.json").read_bytes(),
        log_public_key=(boot_dir / "log-key.raw").read_bytes(),
        install_root=install,
        state_dir=boot_dir / "node-state",
        model_id=None,
    )
    # The machine booted the released image (its firmware measured it); what
    # changed is the code on disk this process imports.
    image = development_image((install / SOURCE_MANIFEST_ARTIFACT).read_bytes())
    tpm = SimulatedNitroTPM.from_seed(
        "node-process", clock=ManualClock(int(now.timestamp() * 1000)), image=image
    )
    roots = {name: str(path) for name, path in SourceTree.running().roots.items()}
    try:
        measured_boot(inputs, tpm=tpm, random=SystemRandom(), now=now)
        outcome = {"check": None, "detail": "booted"}
    except BootError as error:
        outcome = {"check": error.check.value, "detail": error.detail}
    print(json.dumps({"roots": roots, **outcome}))
    """
)


def boot_from_tree(
    kit: ReleaseKit, files: ReleaseFiles, tpm: SimulatedNitroTPM, tree: SourceTree
) -> BootedNode:
    """Measured boot of a node without a model from ``files``, checking ``tree``
    (a copy of the running packages) as the code it runs, in this process."""
    return measured_boot(
        kit.boot_inputs(files, None, kit.node_state_dir(tpm)),
        tpm=tpm,
        random=SystemRandom(),
        now=NOW,
        source_tree=tree,
    )


def copy_running_tree(destination: Path) -> SourceTree:
    """Copy the running Mantle packages into ``destination``; return the copy."""
    for name, root in SourceTree.running().roots.items():
        shutil.copytree(root, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
    return SourceTree.at(destination)


def write_caches_by_importing(tree: Path, *modules: str, optimize: int = 0) -> list[Path]:
    """Import ``modules`` from ``tree`` in a new interpreter (``-O`` ``optimize``
    times) that writes bytecode caches as Python always does; return the caches
    now in ``tree``."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    environment["PYTHONPATH"] = str(tree)
    flags = ["-O"] * optimize
    # -P: nothing but PYTHONPATH in front of sys.path, so Mantle comes from `tree`.
    subprocess.run(
        [sys.executable, "-P", *flags, "-c", f"import {', '.join(modules)}"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        timeout=120,
        check=True,
    )
    return sorted(tree.rglob("__pycache__/*.pyc"))


def boot_in_process_from(
    tree: Path,
    kit: ReleaseKit,
    files: ReleaseFiles,
    work: Path,
    now: datetime,
    *,
    environment: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Boot a node in a new Python process that imports Mantle from ``tree``
    (``environment``: variables to set for it on top of the defaults).

    The working directory is this repository (whose packages are pristine), so
    the outcome shows where the process really imports from.
    """
    work.mkdir(parents=True, exist_ok=True)
    for name, data in (
        ("root.json", files.root),
        ("targets.json", files.targets),
        ("log-proof.json", files.log_proof),
        ("pinned-root.json", kit.root),
        ("log-key.raw", kit.log_public_key),
    ):
        (work / name).write_bytes(data)
    shutil.copytree(kit.install_root, work / "install")
    script = work / "node_process.py"
    script.write_text(_NODE_PROCESS)
    variables = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "PYTHONDONTWRITEBYTECODE": "1",
        **(environment or {}),
    }
    completed = subprocess.run(
        [sys.executable, str(script), str(work), now.isoformat()],
        cwd=REPO_ROOT,
        env=variables,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    outcome: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return outcome
