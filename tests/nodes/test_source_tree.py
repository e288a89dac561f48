"""Finding and hashing the running code (nodes.release's source-tree IO)."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import pytest
from _source_tree import copy_running_tree

from nodes.release import SourceTree, running_source_manifest, source_manifest, verify_source_tree
from protocol.release import MANTLE_PACKAGES, SourceTreeMismatch, parse_source_manifest


def test_running_tree_is_where_the_packages_are_imported_from() -> None:
    tree = SourceTree.running()
    for name in MANTLE_PACKAGES:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        assert tree.roots[name] == Path(module.__file__).resolve().parent


def test_manifest_lists_every_file_of_the_packages_with_its_sha384() -> None:
    tree = SourceTree.running()
    listed = parse_source_manifest(running_source_manifest())
    on_disk = {
        f"{name}/{path.relative_to(root).as_posix()}": path
        for name, root in tree.roots.items()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert set(listed) == set(on_disk)
    assert "protocol/measurement.py" in listed
    for relative, path in on_disk.items():
        assert listed[relative] == hashlib.sha384(path.read_bytes()).digest()
    assert verify_source_tree(running_source_manifest(), tree) == len(listed)


def test_a_copy_has_the_same_manifest_until_it_changes(tmp_path: Path) -> None:
    tree = copy_running_tree(tmp_path)
    assert source_manifest(tree) == running_source_manifest()
    (tmp_path / "mantle" / "__init__.py").write_text("changed\n")
    assert source_manifest(tree) != running_source_manifest()
    with pytest.raises(SourceTreeMismatch) as caught:
        verify_source_tree(running_source_manifest(), tree)
    assert caught.value.check == "modified"


def test_a_missing_package_directory_is_refused(tmp_path: Path) -> None:
    tree = copy_running_tree(tmp_path)
    for path in sorted((tmp_path / "mantle").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "mantle").rmdir()
    with pytest.raises(SourceTreeMismatch) as caught:
        verify_source_tree(running_source_manifest(), tree)
    assert caught.value.check == "missing"
