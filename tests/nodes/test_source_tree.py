"""Finding and hashing the running code (nodes.release's source-tree IO), and
holding the bytecode caches beside it to what the interpreter writes."""

from __future__ import annotations

import hashlib
import importlib
import os
import py_compile
import sys
from pathlib import Path

import pytest
from _source_tree import copy_running_tree, write_caches_by_importing

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
    assert verify_source_tree(running_source_manifest(), tree).files_hashed == len(listed)


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


TAG = sys.implementation.cache_tag


def _boot_cache(root: Path) -> Path:
    return root / "nodes" / "__pycache__" / f"boot.{TAG}.pyc"


def test_caches_another_interpreter_wrote_are_accepted(tmp_path: Path) -> None:
    tree = copy_running_tree(tmp_path)
    written = write_caches_by_importing(tmp_path, "nodes.boot", "nodes.cli", "simulations")
    assert len(written) > 50
    check = verify_source_tree(running_source_manifest(), tree)
    assert check.caches_checked == len(written)
    assert check.files_hashed == len(parse_source_manifest(running_source_manifest()))


def test_a_genuine_cache_is_accepted_whatever_strings_this_process_interned(
    tmp_path: Path,
) -> None:
    """marshal records whether a string was interned where the cache was
    written; for the one-character strings a whole process shares that
    depends on the process, so the bytes of a genuine cache can differ from
    the ones written here."""
    tree = copy_running_tree(tmp_path)
    written = write_caches_by_importing(tmp_path, "protocol.inference")
    assert (
        b"\xfa\x01]"
        in (tmp_path / "protocol" / "__pycache__" / f"inference.{TAG}.pyc").read_bytes()
    )
    sys.intern("]")
    assert verify_source_tree(running_source_manifest(), tree).caches_checked == len(written)


@pytest.mark.parametrize(
    "mode",
    [py_compile.PycInvalidationMode.CHECKED_HASH, py_compile.PycInvalidationMode.UNCHECKED_HASH],
)
def test_hash_based_caches_of_the_released_source_are_accepted(
    tmp_path: Path, mode: py_compile.PycInvalidationMode
) -> None:
    tree = copy_running_tree(tmp_path)
    source = tmp_path / "nodes" / "boot.py"
    py_compile.compile(str(source), cfile=str(_boot_cache(tmp_path)), invalidation_mode=mode)
    assert verify_source_tree(running_source_manifest(), tree).caches_checked == 1


@pytest.mark.parametrize(
    ("planted", "check", "reason"),
    [
        ("nodes/__pycache__/boot.cpython-399.pyc", "bytecode", "another interpreter"),
        (f"nodes/__pycache__/backdoor.{TAG}.pyc", "bytecode", "does not list"),
        (f"nodes/__pycache__/__pycache__/boot.{TAG}.pyc", "bytecode", "does not list"),
        ("nodes/__pycache__/boot.pyc", "bytecode", "never writes"),
        (f"nodes/__pycache__/boot.{TAG}.opt-3.pyc", "bytecode", "never writes"),
        ("nodes/__pycache__/backdoor.py", "unlisted", "inside a bytecode cache directory"),
        ("nodes/__pycache__/sub/backdoor.pyc", "unlisted", "inside a bytecode cache directory"),
    ],
)
def test_a_file_in_a_cache_directory_no_listed_source_explains_is_refused(
    tmp_path: Path, planted: str, check: str, reason: str
) -> None:
    tree = copy_running_tree(tmp_path)
    write_caches_by_importing(tmp_path, "nodes.boot")
    genuine = _boot_cache(tmp_path).read_bytes()
    (tmp_path / planted).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / planted).write_bytes(genuine)
    with pytest.raises(SourceTreeMismatch) as caught:
        verify_source_tree(running_source_manifest(), tree)
    assert (caught.value.check, caught.value.path) == (check, planted)
    assert reason in str(caught.value)


def test_a_leftover_from_an_interrupted_cache_write_is_not_code(tmp_path: Path) -> None:
    tree = copy_running_tree(tmp_path)
    write_caches_by_importing(tmp_path, "nodes.boot")
    cache = _boot_cache(tmp_path)
    cache.with_name(f"{cache.name}.140245").write_bytes(b"\x00" * 16)
    verify_source_tree(running_source_manifest(), tree)


def test_a_stale_or_foreign_cache_is_refused(tmp_path: Path) -> None:
    tree = copy_running_tree(tmp_path)
    write_caches_by_importing(tmp_path, "nodes.boot")
    cache, source = _boot_cache(tmp_path), tmp_path / "nodes" / "boot.py"
    genuine = cache.read_bytes()

    # The source's mtime moved: Python would ignore the cache, boot refuses it.
    info = source.stat()
    os.utime(source, (info.st_atime, info.st_mtime + 10))
    with pytest.raises(SourceTreeMismatch) as caught:
        verify_source_tree(running_source_manifest(), tree)
    assert (caught.value.check, caught.value.path) == ("bytecode", _relative(cache, tmp_path))
    assert "recorded source mtime or size" in str(caught.value)
    os.utime(source, (info.st_atime, info.st_mtime))
    verify_source_tree(running_source_manifest(), tree)

    same_length = genuine.replace(b"reboot the machine", b"REBOOT the machine", 1)
    assert same_length != genuine
    for forged, reason in (
        (b"\x00\x00\x00\x00" + genuine[4:], "reads"),  # another Python's magic number
        (genuine[:4] + (0b10).to_bytes(4, "little") + genuine[8:], "flags"),
        (genuine + b"\x00", "code is not"),
        (genuine[:-1], "code is not"),
        (same_length, "code is not"),  # loads, and differs once written again
        (genuine[:-40] + b"\xff" * 40, "code is not"),  # does not load
    ):
        cache.write_bytes(forged)
        with pytest.raises(SourceTreeMismatch) as caught:
            verify_source_tree(running_source_manifest(), tree)
        assert caught.value.check == "bytecode"
        assert reason in str(caught.value)


def test_a_symlinked_cache_directory_is_refused(tmp_path: Path) -> None:
    tree = copy_running_tree(tmp_path / "tree")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "tree" / "nodes" / "__pycache__").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SourceTreeMismatch) as caught:
        verify_source_tree(running_source_manifest(), tree)
    assert (caught.value.check, caught.value.path) == ("unlisted", "nodes/__pycache__")


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists every directory")
def test_a_cache_directory_that_cannot_be_listed_is_refused(tmp_path: Path) -> None:
    """Python opens a cache by name: an unlistable ``__pycache__`` still serves it."""
    tree = copy_running_tree(tmp_path)
    write_caches_by_importing(tmp_path, "nodes.boot")
    cache_directory = _boot_cache(tmp_path).parent
    cache_directory.chmod(0o311)
    try:
        with pytest.raises(SourceTreeMismatch) as caught:
            verify_source_tree(running_source_manifest(), tree)
    finally:
        cache_directory.chmod(0o755)
    assert caught.value.check == "unreadable"


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def test_a_cache_file_with_an_unsafe_name_is_refused_unquoted(tmp_path: Path) -> None:
    tree = copy_running_tree(tmp_path)
    cache_directory = tmp_path / "nodes" / "__pycache__"
    cache_directory.mkdir()
    (cache_directory / f"\x1b[31mboot.{TAG}.pyc").write_bytes(b"\x00" * 16)
    with pytest.raises(SourceTreeMismatch) as caught:
        verify_source_tree(running_source_manifest(), tree)
    assert (caught.value.check, caught.value.path) == ("bytecode", None)
    assert "\x1b" not in str(caught.value)
