"""Attack: plant a bytecode cache that Python runs instead of a released source.

Python runs ``__pycache__/<stem>.<tag>.pyc`` instead of compiling ``<stem>.py``
whenever the cache's 16-byte header agrees with the source, and never compares
the code inside with it. The TPM owner (root) writes a cache for
``nodes/boot.py`` holding the released code plus a payload, behind the header a
genuine cache of the released source would carry: UNCHECKED_HASH (never
compared with the source at all), CHECKED_HASH (recording the released source's
hash), or a timestamp cache recording the source's mtime and size. Every listed
file is byte for byte the released one. Variant: a ``sys.pycache_prefix``
(``PYTHONPYCACHEPREFIX``) puts the cache outside the package directories.

Before the fix boot ignored ``__pycache__``: the node process ran the payload
and booted. Now every cache must be exactly what this interpreter writes for
the listed source (recompiled from the released bytes), and a pycache prefix is
refused: boot stops with ``BootCheck.SOURCE_TREE`` and nothing is measured.
So does a cache whose bytecode holds a specialized instruction with forged
inline caches, which a check that loaded the cache and wrote it again would
take for the genuine one.
(The payload of a module imported before boot has run by then -- the check
cannot undo an import; it keeps such a node from booting, and on EC2 the
measured read-only image keeps the file from being planted.)
"""

from __future__ import annotations

import dis
import importlib.util
import marshal
import opcode
import os
import sys
from importlib import _bootstrap_external
from pathlib import Path

import pytest
from _release_kit import NOW, ReleaseKit
from _source_tree import (
    boot_from_tree,
    boot_in_process_from,
    copy_running_tree,
    write_caches_by_importing,
)

from nodes.boot import BootCheck, BootError
from protocol.measurement import APPLICATION_PCRS, PCR_RESET_VALUE
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM

NOW_MS = int(NOW.timestamp() * 1000)
TARGET = "nodes/boot.py"
CACHE = f"nodes/__pycache__/boot.{sys.implementation.cache_tag}.pyc"
FORGERIES = ["unchecked-hash", "checked-hash", "timestamp", "unchecked-hash-of-the-payload"]


def _forged_cache(tree: Path, marker: Path, forgery: str) -> bytes:
    """A cache of the released ``nodes/boot.py`` plus a payload that leaves
    ``marker``, with the header a genuine cache of the released file has."""
    source_path = tree / TARGET
    released = source_path.read_bytes()
    payload = f"\n__import__('pathlib').Path({str(marker)!r}).write_text('ran')\n".encode()
    code = compile(released + payload, str(source_path), "exec", dont_inherit=True)
    writers = _bootstrap_external
    if forgery == "timestamp":
        info = os.stat(source_path)
        data = writers._code_to_timestamp_pyc(code, int(info.st_mtime), info.st_size)
    elif forgery == "unchecked-hash-of-the-payload":  # what py_compile writes
        data = writers._code_to_hash_pyc(
            code, importlib.util.source_hash(released + payload), False
        )
    else:
        released_hash = importlib.util.source_hash(released)
        data = writers._code_to_hash_pyc(code, released_hash, forgery == "checked-hash")
    return bytes(data)


def _plant(where: Path, data: bytes) -> None:
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_bytes(data)


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_node_process_that_loaded_a_planted_cache_does_not_boot(
    tmp_path: Path, forgery: str
) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")  # lists the pristine tree
    files = kit.publish(1)
    copy_running_tree(tmp_path / "tree")
    marker = tmp_path / "payload-ran"
    _plant(tmp_path / "tree" / CACHE, _forged_cache(tmp_path / "tree", marker, forgery))

    outcome = boot_in_process_from(tmp_path / "tree", kit, files, tmp_path / "boot", NOW)
    # The attack is real: Python ran the cache, not the released source.
    assert marker.exists()
    assert outcome["check"] == BootCheck.SOURCE_TREE.value, outcome
    assert "(bytecode)" in str(outcome["detail"]) and CACHE in str(outcome["detail"])


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_planted_cache_stops_boot_before_anything_is_measured(
    tmp_path: Path, forgery: str
) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1)
    tree = copy_running_tree(tmp_path / "tree")
    _plant(
        tmp_path / "tree" / CACHE,
        _forged_cache(tmp_path / "tree", tmp_path / "payload-ran", forgery),
    )
    tpm = SimulatedNitroTPM.from_seed("node", clock=ManualClock(NOW_MS))
    with pytest.raises(BootError) as stopped:
        boot_from_tree(kit, files, tpm, tree)
    assert stopped.value.check is BootCheck.SOURCE_TREE
    assert "(bytecode)" in stopped.value.detail and CACHE in stopped.value.detail
    # The header is a genuine one but for the last forgery: what gives the
    # others away is the code.
    if forgery == "unchecked-hash-of-the-payload":
        assert "records another source's hash" in stopped.value.detail
    else:
        assert "code is not what this interpreter compiles" in stopped.value.detail
    for index in APPLICATION_PCRS:
        assert tpm.pcr_read(index) == PCR_RESET_VALUE


def test_a_node_process_with_a_pycache_prefix_does_not_boot(tmp_path: Path) -> None:
    """The cache lives under PYTHONPYCACHEPREFIX: the package directories hold
    no ``__pycache__`` at all."""
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1)
    tree = tmp_path / "tree"
    copy_running_tree(tree)
    prefix = tmp_path / "prefix"
    marker = tmp_path / "payload-ran"
    elsewhere = prefix / (tree / "nodes").relative_to("/") / Path(CACHE).name
    _plant(elsewhere, _forged_cache(tree, marker, "unchecked-hash"))

    outcome = boot_in_process_from(
        tree, kit, files, tmp_path / "boot", NOW, environment={"PYTHONPYCACHEPREFIX": str(prefix)}
    )
    assert marker.exists()
    assert not list(tree.rglob("__pycache__"))
    assert outcome["check"] == BootCheck.SOURCE_TREE.value, outcome
    assert "(pycache_prefix)" in str(outcome["detail"])


def test_a_pycache_prefix_stops_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1)
    tree = copy_running_tree(tmp_path / "tree")
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "prefix"))
    tpm = SimulatedNitroTPM.from_seed("node", clock=ManualClock(NOW_MS))
    with pytest.raises(BootError) as stopped:
        boot_from_tree(kit, files, tpm, tree)
    assert stopped.value.check is BootCheck.SOURCE_TREE
    assert "(pycache_prefix)" in stopped.value.detail
    for index in APPLICATION_PCRS:
        assert tpm.pcr_read(index) == PCR_RESET_VALUE


def test_a_specialized_instruction_with_forged_inline_caches_stops_boot(tmp_path: Path) -> None:
    """A cache whose bytecode holds a specialized instruction in place of the
    one the compiler wrote, with inline cache entries the attacker chose:
    CPython executes it as it stands (its attribute offset read from the
    forged entries), yet loading it and writing it again gives back the
    genuine bytes, since marshal writes bytecode de-specialized. The check
    compares the bytes, so it sees the difference."""
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1)
    tree = copy_running_tree(tmp_path / "tree")
    write_caches_by_importing(tmp_path / "tree", "nodes.boot")
    cache = tmp_path / "tree" / CACHE
    genuine = cache.read_bytes()
    load_attr = bytes([opcode.opmap["LOAD_ATTR"], 0]) + bytes(8)  # 4 zeroed cache entries
    specialized = bytes([dis._all_opmap["LOAD_ATTR_INSTANCE_VALUE"], 0]) + b"\x41" * 8
    assert load_attr in genuine
    forged = genuine.replace(load_attr, specialized, 1)
    loaded = marshal.loads(forged[16:])
    assert marshal.dumps(loaded) == marshal.dumps(marshal.loads(genuine[16:]))
    cache.write_bytes(forged)

    tpm = SimulatedNitroTPM.from_seed("node", clock=ManualClock(NOW_MS))
    with pytest.raises(BootError) as stopped:
        boot_from_tree(kit, files, tpm, tree)
    assert stopped.value.check is BootCheck.SOURCE_TREE
    assert "code is not what this interpreter compiles" in stopped.value.detail
