"""The source manifest: canonical format, strict parsing, and the tree comparison."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.release import (
    MalformedRelease,
    SourceTreeMismatch,
    compare_source_tree,
    format_source_manifest,
    parse_source_manifest,
)

FILES = {
    "actors/__init__.py": hashlib.sha384(b"a").digest(),
    "nodes/boot.py": hashlib.sha384(b"b").digest(),
    "protocol/py.typed": hashlib.sha384(b"").digest(),
}

components = st.from_regex(r"[a-z_][a-z0-9_]{0,8}(\.py)?", fullmatch=True)
paths = st.builds(
    lambda package, parts: "/".join([package, *parts]),
    st.sampled_from(["actors", "protocol", "nodes", "simulations", "mantle"]),
    st.lists(components, min_size=1, max_size=4),
)


@given(st.dictionaries(paths, st.binary(min_size=48, max_size=48), min_size=1, max_size=20))
def test_format_and_parse_round_trip(files: dict[str, bytes]) -> None:
    encoded = format_source_manifest(files)
    assert dict(parse_source_manifest(encoded)) == files
    assert format_source_manifest(parse_source_manifest(encoded)) == encoded


def test_lines_are_digest_two_spaces_path_sorted() -> None:
    lines = format_source_manifest(FILES).decode().splitlines()
    assert lines == [f"{FILES[path].hex()}  {path}" for path in sorted(FILES)]


@pytest.mark.parametrize(
    "line",
    [
        "{d}  ../etc/passwd",
        "{d}  /abs/path.py",
        "{d}  other_package/x.py",
        "{d}  nodes/__pycache__/boot.cpython-311.pyc",
        "{d}  nodes",
        "{d} nodes/boot.py",
        "{u}  nodes/boot.py",
        "{d}  nodes/a b.py",
        "{d}  nodes//boot.py",
    ],
)
def test_malformed_lines_are_refused(line: str) -> None:
    digest = hashlib.sha384(b"x").hexdigest()
    text = line.format(d=digest, u=digest.upper()) + "\n"
    with pytest.raises(MalformedRelease):
        parse_source_manifest(text.encode())


def test_order_duplicates_and_framing_are_strict() -> None:
    good = format_source_manifest(FILES)
    lines = good.splitlines(keepends=True)
    for bad in (
        b"".join(reversed(lines)),
        good + lines[-1],
        good.rstrip(b"\n"),
        b"",
        good.replace(b"\n", b"\r\n"),
        "é".encode() + good,
    ):
        with pytest.raises(MalformedRelease):
            parse_source_manifest(bad)


def test_comparison_refuses_unlisted_code_missing_and_modified_files() -> None:
    present = set(FILES)
    compare_source_tree(FILES, present, FILES)
    # Unlisted files Python does not import are tolerated.
    compare_source_tree(FILES, present | {"nodes/README.txt"}, FILES)
    for extra in ("nodes/backdoor.py", "nodes/x.pyc", "protocol/_fast.so"):
        with pytest.raises(SourceTreeMismatch) as caught:
            compare_source_tree(FILES, present | {extra}, FILES)
        assert (caught.value.check, caught.value.path) == ("unlisted", extra)
    with pytest.raises(SourceTreeMismatch) as caught:
        compare_source_tree(FILES, present - {"nodes/boot.py"}, FILES)
    assert (caught.value.check, caught.value.path) == ("missing", "nodes/boot.py")
    changed = {**FILES, "protocol/py.typed": hashlib.sha384(b"changed").digest()}
    with pytest.raises(SourceTreeMismatch) as caught:
        compare_source_tree(FILES, present, changed)
    assert (caught.value.check, caught.value.path) == ("modified", "protocol/py.typed")


def test_an_unlisted_file_with_an_unsafe_name_is_not_quoted() -> None:
    with pytest.raises(SourceTreeMismatch) as caught:
        compare_source_tree(FILES, set(FILES) | {"nodes/\x1b[31mevil.py"}, FILES)
    assert caught.value.path is None
    assert "\x1b" not in str(caught.value)
