"""Attack: add code to the installed packages next to the released files.

Every released file still matches, so a check of listed files alone passes; but
the new module is importable (``import nodes.backdoor``), and so is a bare
``.pyc`` or an extension module. Before the fix boot did not look at the tree
at all. Now an unlisted ``.py``, ``.pyc`` or ``.so`` file stops boot with
``BootCheck.SOURCE_TREE`` ("unlisted"); other unlisted files (notes, editor
backups) Python never imports are tolerated. ``__pycache__`` is not listed: a
cache there must be exactly what the interpreter wrote for its listed source
(tests/adversarial/test_planted_bytecode_cache.py has the forgeries).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _release_kit import NOW, ReleaseKit
from _source_tree import boot_from_tree, copy_running_tree, write_caches_by_importing

from nodes.boot import BootCheck, BootError
from protocol.measurement import APPLICATION_PCRS, PCR_RESET_VALUE
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM

NOW_MS = int(NOW.timestamp() * 1000)


@pytest.mark.parametrize(
    "planted", ["nodes/backdoor.py", "actors/key_custody/leak.pyc", "protocol/fast.so"]
)
def test_unlisted_code_stops_boot(tmp_path: Path, planted: str) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1)
    tree = copy_running_tree(tmp_path / "tree")
    (tmp_path / "tree" / planted).write_bytes(b"print('the operator was here')\n")
    tpm = SimulatedNitroTPM.from_seed("node", clock=ManualClock(NOW_MS))
    with pytest.raises(BootError) as stopped:
        boot_from_tree(kit, files, tpm, tree)
    assert stopped.value.check is BootCheck.SOURCE_TREE
    assert "unlisted" in stopped.value.detail and planted in stopped.value.detail
    for index in APPLICATION_PCRS:
        assert tpm.pcr_read(index) == PCR_RESET_VALUE


def test_a_symlinked_package_directory_stops_boot(tmp_path: Path) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1)
    tree = copy_running_tree(tmp_path / "tree")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "__init__.py").write_text("print('imported from outside the tree')\n")
    (tmp_path / "tree" / "nodes" / "extra").symlink_to(elsewhere, target_is_directory=True)
    tpm = SimulatedNitroTPM.from_seed("node", clock=ManualClock(NOW_MS))
    with pytest.raises(BootError) as stopped:
        boot_from_tree(kit, files, tpm, tree)
    assert stopped.value.check is BootCheck.SOURCE_TREE


def test_bytecode_caches_and_notes_are_not_code_the_release_must_list(tmp_path: Path) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1)
    tree = copy_running_tree(tmp_path / "tree")
    # The caches the interpreter itself writes, at two optimization levels.
    write_caches_by_importing(tmp_path / "tree", "nodes.boot")
    written = write_caches_by_importing(tmp_path / "tree", "nodes.boot", optimize=1)
    cache = tmp_path / "tree" / "nodes" / "__pycache__" / f"boot.{sys.implementation.cache_tag}.pyc"
    assert cache in written and cache.with_suffix(".opt-1.pyc") in written
    (tmp_path / "tree" / "nodes" / "NOTES.txt").write_text("not imported\n")
    tpm = SimulatedNitroTPM.from_seed("node", clock=ManualClock(NOW_MS))
    boot_from_tree(kit, files, tpm, tree)

    # A cache that is not what its source compiles to is code the release
    # does not vouch for.
    cache.write_bytes(b"\x00" * 16)
    tpm.reboot()
    with pytest.raises(BootError) as stopped:
        boot_from_tree(kit, files, tpm, tree)
    assert stopped.value.check is BootCheck.SOURCE_TREE
    assert "(bytecode)" in stopped.value.detail
    assert f"nodes/__pycache__/{cache.name}" in stopped.value.detail
