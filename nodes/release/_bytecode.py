"""Bytecode caches beside the released sources: each must be what this interpreter writes.

Python runs ``<dir>/__pycache__/<stem>.<cache tag>[.opt-<n>].pyc`` instead of
compiling ``<dir>/<stem>.py`` whenever the cache's 16-byte header agrees with
the source: for a timestamp cache, the source's mtime and size it records; for
a hash-based cache, the source hash it records -- and for an "unchecked" one
not even that. The code after the header is never compared with the source.
So a cache holding the released code plus a payload runs although every
listed file hashes right, and a source that matched the release says nothing
about its cache. Boot therefore holds each cache to the only bytes that are
innocent: the ones the import system itself writes for the listed source --
the released bytes compiled as the import system compiles them, at the
optimization level the cache's name says, behind the header the file carries,
whose fields must agree with the source (the recorded mtime and size with the
file that was read and hashed; the recorded hash with its bytes), whatever the
"check source" flag says.

The comparison. A cache that is byte for byte what importlib's own writer
(the function the import system calls when it writes one) produces for the
fresh compile, behind the same header, is accepted outright; that is the
common case. But equal bytes are not guaranteed for a genuine cache: marshal
records whether each string was interned in the process that wrote it, and
the empty and one-character strings are objects a whole process shares,
interned or not depending on what ran before (the test suite interns ``"]"``
long before a fresh interpreter does); and it flags an object for later
reference by its reference count, which can differ in the same way, shifting
the indices of later references. So a cache of the same length is compared
with the fresh stream in lockstep (:func:`_same_but_for_process_state`): the
structure is read from the fresh stream only -- nothing in the cache decides
how it is read, and it is never loaded -- and every byte must be equal but
for exactly those two differences, neither of which changes what a load
builds. Everything else,
the bytecode first, is compared byte for byte. (Loading the cache and writing
it again would not do: marshal writes bytecode de-specialized with its inline
caches zeroed, so a cache carrying a specialized instruction with forged
cache entries -- which CPython executes as it stands -- would compare equal.)
Serving code never imports marshal.

Refused although harmless, because they are not what this interpreter would
write: a cache whose recorded mtime or size no longer match the source (stale:
the import system would ignore and rewrite it), one with bytes after the code,
or one compiled under another spelling of the source's path (the code records
it: a symbolic link on ``sys.path``, ``compileall -d``), with other
compile-time options (``-X no_debug_ranges``) or by another interpreter.
Deleting the cache is always the fix; the import system writes a fresh one.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from dataclasses import dataclass
from importlib import _bootstrap_external
from types import CodeType
from typing import Final, NoReturn

from protocol.release import (
    BYTECODE_CACHE_DIRECTORY,
    SourceMismatchCheck,
    SourceTreeMismatch,
    is_code_path,
)

#: The optimization levels the interpreter compiles at (``-O``: 1, ``-OO``: 2);
#: a cache for each may exist, and each is checked at its own level.
OPTIMIZATION_LEVELS: Final = (0, 1, 2)
#: Magic number (4 bytes), flags (4), then mtime and size (4 + 4) or the source hash (8).
HEADER_SIZE: Final = 16
_HASH_BASED: Final = 0b01
_CHECK_SOURCE: Final = 0b10
_SOURCE_SUFFIX: Final = ".py"
_CACHE_SUFFIX: Final = ".pyc"
_OPTIMIZATION_PREFIX: Final = "opt-"


@dataclass(frozen=True)
class SourceFile:
    """A listed source as boot read it: its bytes, and the mtime the import
    system records for it (``int(st_mtime)`` of the same open file)."""

    data: bytes
    mtime: int


def expected_caches(source: str) -> dict[str, int]:
    """``{cache path: optimization level}``: every cache this interpreter may
    write for the source at manifest path ``source`` (a ``.py`` file).

    Named with importlib's own rule (:func:`importlib.util.cache_from_source`);
    the caller has refused a ``sys.pycache_prefix``, under which that rule
    would name files outside the tree. An interpreter without a cache tag
    writes no caches: every cache is then another interpreter's.
    """
    if not source.endswith(_SOURCE_SUFFIX) or sys.implementation.cache_tag is None:
        return {}
    return {
        importlib.util.cache_from_source(source, optimization="" if level == 0 else level): level
        for level in OPTIMIZATION_LEVELS
    }


def unexpected_file_refusal(path: str, where: str | None) -> SourceTreeMismatch | None:
    """Why ``path``, a file under a bytecode cache directory that is no cache
    of a listed source, stops boot; ``None`` for a file Python never imports
    (an interrupted cache write leaves ``<name>.pyc.<number>``).

    ``where``: ``path`` as the error may quote it (``None`` if it is unsafe).
    """
    directory, _, name = path.rpartition("/")
    if not directory.endswith(f"/{BYTECODE_CACHE_DIRECTORY}") or not name.endswith(_CACHE_SUFFIX):
        if not is_code_path(name):
            return None
        # A cache directory without __init__.py is a namespace package:
        # `import nodes.__pycache__.x` would load this.
        return SourceTreeMismatch(
            SourceMismatchCheck.UNLISTED,
            where,
            "code inside a bytecode cache directory would be importable",
        )
    body = name[: -len(_CACHE_SUFFIX)]
    head, _, last = body.rpartition(".")
    optimization = None
    if last.startswith(_OPTIMIZATION_PREFIX):
        body, optimization = head, last[len(_OPTIMIZATION_PREFIX) :]
    stem, _, tag = body.rpartition(".")
    if not stem or optimization not in (None, *(str(level) for level in OPTIMIZATION_LEVELS[1:])):
        detail = "a bytecode cache name this interpreter never writes"
    elif tag != sys.implementation.cache_tag:
        detail = f"a bytecode cache for another interpreter (this one is {_this_tag()})"
    else:
        detail = "a bytecode cache for a source the release does not list"
    return SourceTreeMismatch(SourceMismatchCheck.BYTECODE, where, detail)


def check_cache(
    cache: bytes, *, where: str | None, source: SourceFile, filename: str, optimization: int
) -> None:
    """Refuse ``cache`` unless it is exactly what the import system writes for
    ``source`` (compiled as ``filename`` at ``optimization``) behind its header.

    ``cache``: the whole file, read by the caller. Raises
    :class:`~protocol.release.SourceTreeMismatch` (``"bytecode"``).
    """
    if len(cache) < HEADER_SIZE or cache[:4] != _bootstrap_external.MAGIC_NUMBER:
        _refuse(where, f"not a bytecode cache this interpreter ({_this_tag()}) reads")
    flags = int.from_bytes(cache[4:8], "little")
    if flags & ~(_HASH_BASED | _CHECK_SOURCE) or flags == _CHECK_SOURCE:
        _refuse(where, "a bytecode cache with flags the import system never writes")
    code = _compile(source, filename, optimization)
    if code is None:
        _refuse(where, "its source does not compile, so no cache of it is genuine")
    if flags & _HASH_BASED:
        # An unchecked cache is never compared with its source by the import
        # system; here it is, and its code too.
        expected = _code_to_hash_pyc(
            code,
            source_hash=importlib.util.source_hash(source.data),
            checked=bool(flags & _CHECK_SOURCE),
        )
        header_refusal = "a hash-based bytecode cache that records another source's hash"
    else:
        expected = _code_to_timestamp_pyc(code, mtime=source.mtime, size=len(source.data))
        header_refusal = (
            "a bytecode cache whose recorded source mtime or size differ from the"
            " source's (stale or forged; delete it)"
        )
    if cache[:HEADER_SIZE] != expected[:HEADER_SIZE]:
        _refuse(where, header_refusal)
    if cache == expected:
        return
    if len(cache) != len(expected) or not _same_but_for_process_state(expected, cache):
        _refuse(
            where,
            "a bytecode cache whose code is not what this interpreter compiles from"
            " the released source (planted, or written with other options; delete it)",
        )


def _compile(source: SourceFile, filename: str, optimization: int) -> CodeType | None:
    # Exactly the import system's call (SourceLoader.source_to_code). Warnings
    # a compile raises (an invalid escape, say) belong to the released source,
    # not to boot; they do not change the code.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return compile(source.data, filename, "exec", dont_inherit=True, optimize=optimization)
        except (SyntaxError, ValueError):
            return None


def _code_to_timestamp_pyc(code: CodeType, *, mtime: int, size: int) -> bytes:
    writer = _bootstrap_external._code_to_timestamp_pyc  # type: ignore[attr-defined]
    return bytes(writer(code, mtime, size))


def _code_to_hash_pyc(code: CodeType, *, source_hash: bytes, checked: bool) -> bytes:
    writer = _bootstrap_external._code_to_hash_pyc  # type: ignore[attr-defined]
    return bytes(writer(code, source_hash, checked))


def _this_tag() -> str:
    return sys.implementation.cache_tag or "an interpreter without a cache tag"


def _refuse(where: str | None, detail: str) -> NoReturn:
    raise SourceTreeMismatch(SourceMismatchCheck.BYTECODE, where, detail)


# The marshal format (version 4, CPython 3.11's Python/marshal.c): one type
# byte per object, whose high bit asks the reader to remember the object for
# later `r` references (by index, in the order objects start).
_FLAG_REF: Final = 0x80
_REF: Final = ord("r")
_NO_PAYLOAD: Final = frozenset(b"0NFTS.")  # NULL, None, False, True, StopIteration, ...
_FIXED_SIZE: Final = {ord("i"): 4, ord("g"): 8, ord("y"): 16}  # int32, float, complex
_LONG: Final = ord("l")  # int32 digit count (its sign the number's), 2 bytes a digit
_SIZED: Final = frozenset(b"stuaA")  # bytes and strings: uint32 length, then the bytes
_SHORT: Final = frozenset(b"zZ")  # ASCII strings: 1-byte length, then the bytes
_SEQUENCE: Final = frozenset(b"(>")  # tuple, frozenset: uint32 count, then the items
_SMALL_TUPLE: Final = ord(")")  # 1-byte count, then the items
_CODE: Final = ord("c")  # 5 uint32, 8 objects, uint32 first line, 2 objects
#: A string type and its interned twin: for a shared one-character string the
#: interned flag is process state (`z`/`Z` short ASCII, `u`/`t` other strings).
_INTERNED_TWIN: Final = {
    ord("z"): ord("Z"),
    ord("Z"): ord("z"),
    ord("u"): ord("t"),
    ord("t"): ord("u"),
}


class _Differs(Exception):
    """The two streams differ in more than process state."""


def _same_but_for_process_state(mine: bytes, theirs: bytes) -> bool:
    """Whether ``theirs`` (a cache, as long as ``mine``) is ``mine`` (the fresh
    cache) but for marshal's reference flags and indices and the interned flag
    of one-character strings.

    Walks ``mine`` and compares ``theirs`` position by position; what a
    position holds is only ever read from ``mine``. From ``theirs`` only two
    things are read: its type bytes, which may differ from ``mine``'s in the
    reference bit and in the interned twin of a one-character string, and its
    reference indices, which must name an object starting where ``mine``'s
    reference does. Anything else unequal, unexpected or unreadable is a
    difference.
    """
    walk = _Lockstep(mine, theirs)
    try:
        walk.object()
    except (_Differs, RecursionError):
        return False
    return walk.position == len(mine)


class _Lockstep:
    def __init__(self, mine: bytes, theirs: bytes) -> None:
        self.mine = mine
        self.theirs = theirs
        self.position = HEADER_SIZE
        # Where each object remembered for a later reference starts, in index order.
        self.my_references: list[int] = []
        self.their_references: list[int] = []

    def object(self) -> None:
        start = self.position
        if start >= len(self.mine):
            raise _Differs
        mine, theirs = self.mine[start], self.theirs[start]
        kind, their_kind = mine & ~_FLAG_REF, theirs & ~_FLAG_REF
        self.position += 1
        if kind == _REF:
            if theirs != mine:
                raise _Differs
            mine_index, their_index = self._index(self.mine), self._index(self.theirs)
            self.position += 4
            if not (
                mine_index < len(self.my_references)
                and their_index < len(self.their_references)
                and self.my_references[mine_index] == self.their_references[their_index]
            ):
                raise _Differs
            return
        if mine & _FLAG_REF:
            self.my_references.append(start)
        if theirs & _FLAG_REF:
            self.their_references.append(start)
        if their_kind != kind and _INTERNED_TWIN.get(kind) != their_kind:
            raise _Differs
        if kind in _NO_PAYLOAD:
            pass
        elif kind in _FIXED_SIZE:
            self._same(_FIXED_SIZE[kind])
        elif kind == _LONG:
            self._same(2 * abs(self._number(signed=True)))
        elif kind in _SIZED or kind in _SHORT:
            length = self._number() if kind in _SIZED else self._byte()
            data = self.mine[self.position : self.position + length]
            self._same(length)
            if their_kind != kind and not _is_shared_string(data):
                raise _Differs
        elif kind in _SEQUENCE or kind == _SMALL_TUPLE:
            count = self._number() if kind in _SEQUENCE else self._byte()
            for _ in range(count):
                self.object()
        elif kind == _CODE:
            self._same(5 * 4)  # argument counts, stack size, flags
            for _ in range(8):  # code, consts, names, locals, kinds, file, name, qualname
                self.object()
            self._same(4)  # first line number
            for _ in range(2):  # line table, exception table
                self.object()
        else:
            raise _Differs

    def _same(self, size: int) -> None:
        end = self.position + size
        if (
            end > len(self.mine)
            or self.mine[self.position : end] != self.theirs[self.position : end]
        ):
            raise _Differs
        self.position = end

    def _byte(self) -> int:
        value = self.mine[self.position] if self.position < len(self.mine) else 0
        self._same(1)
        return value

    def _number(self, *, signed: bool = False) -> int:
        raw = self.mine[self.position : self.position + 4]
        self._same(4)
        return int.from_bytes(raw, "little", signed=signed)

    def _index(self, stream: bytes) -> int:
        if self.position + 4 > len(stream):
            raise _Differs
        return int.from_bytes(stream[self.position : self.position + 4], "little")


def _is_shared_string(data: bytes) -> bool:
    """Whether ``data`` (marshal's UTF-8) is a string CPython keeps one object
    of per process: the empty string or a single Latin-1 character."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return len(text) <= 1 and all(ord(character) < 256 for character in text)
