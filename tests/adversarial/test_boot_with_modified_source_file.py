"""Attack: start a node from a tree in which one released source file was changed.

Before the fix boot hashed the source manifest *file* against the release, not
the code: any file of the installed packages could be edited and the node
booted. Now boot hashes every file of the packages the process imports from and
stops with ``BootCheck.SOURCE_TREE`` on a modified or missing one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _release_kit import NOW, ReleaseKit
from _source_tree import boot_from_tree, boot_in_process_from, copy_running_tree

from nodes.boot import BootCheck, BootError
from protocol.measurement import APPLICATION_PCRS, PCR_RESET_VALUE, RELEASE_COUNTER
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM

NOW_MS = int(NOW.timestamp() * 1000)
TARGET = "actors/key_custody/_vault.py"


def _tamper(tree: Path) -> None:
    path = tree / TARGET
    path.write_bytes(path.read_bytes() + b"\nRELEASE_EVERY_KEY = True  # planted\n")


def test_a_modified_file_stops_boot(tmp_path: Path) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")  # lists the pristine tree
    files = kit.publish(1)
    tree = copy_running_tree(tmp_path / "tree")
    tpm = SimulatedNitroTPM.from_seed("node", clock=ManualClock(NOW_MS))
    # The untouched copy boots: the check compares contents, not locations.
    boot_from_tree(kit, files, tpm, tree)

    _tamper(tmp_path / "tree")
    tpm.reboot()
    with pytest.raises(BootError) as stopped:
        boot_from_tree(kit, files, tpm, tree)
    assert stopped.value.check is BootCheck.SOURCE_TREE
    assert "modified" in stopped.value.detail and TARGET in stopped.value.detail
    for index in APPLICATION_PCRS:
        assert tpm.pcr_read(index) == PCR_RESET_VALUE
    assert tpm.counter_read(RELEASE_COUNTER) == 1


def test_a_deleted_file_stops_boot(tmp_path: Path) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1)
    tree = copy_running_tree(tmp_path / "tree")
    (tmp_path / "tree" / "protocol" / "sealed_model.py").unlink()
    tpm = SimulatedNitroTPM.from_seed("node", clock=ManualClock(NOW_MS))
    with pytest.raises(BootError) as stopped:
        boot_from_tree(kit, files, tpm, tree)
    assert stopped.value.check is BootCheck.SOURCE_TREE
    assert "missing" in stopped.value.detail


def test_a_node_process_started_from_a_modified_tree_does_not_boot(tmp_path: Path) -> None:
    """The real thing: a separate process imports Mantle from the modified copy
    (its working directory holds the pristine tree) and boots with defaults."""
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1)
    copy_running_tree(tmp_path / "tree")
    _tamper(tmp_path / "tree")

    outcome = boot_in_process_from(tmp_path / "tree", kit, files, tmp_path / "boot", NOW)
    roots = outcome["roots"]
    assert isinstance(roots, dict)
    assert all(Path(str(path)).is_relative_to(tmp_path / "tree") for path in roots.values())
    assert outcome["check"] == BootCheck.SOURCE_TREE.value
    assert TARGET in str(outcome["detail"])
