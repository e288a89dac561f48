"""What a client remembers between runs so that the operator cannot wind it back.

The release signers publish a floor with every release (``min_version``): no
release below it may get a prompt. A verifier that only ever sees what the
operator hands it can be given an old, still validly signed and logged bundle
whose own floor is low, and would accept it. The client therefore keeps the
highest floor it has ever verified, on its own disk (the customer's machine,
which the operator does not control), and refuses every release below it from
then on. The floor only rises: a stored floor is never lowered, and a damaged
state file is refused rather than read as zero.

The same holds for the transparency log: a log that showed this client a
tree head must show it, on every later run, a tree that extends it (a
consistency proof), or it forked. The client therefore also keeps the largest
signed tree head it has verified (:attr:`TrustState.tree_head`); like the
floor it never goes back.

The file is small canonical JSON, ``{"release_floor": N, "tree_head": {...},
"version": 2}`` (the tree head in the RFC 6962 ``get-sth`` shape, absent
until one was seen; a version 1 file, without it, is still read), written
atomically (a temporary file, fsync, rename). Runs sharing the file store
by compare-and-swap (:meth:`TrustStateFile.advance_if`, under an advisory
lock where the platform has one): a run whose checks were made against a
state another run has changed since must check again against the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocol.tlog import SignedTreeHead, TlogError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the compare-and-swap alone
    fcntl = None  # type: ignore[assignment]

STATE_FORMAT_VERSION: Final = 2
#: The first format: the floor alone.
_FLOOR_ONLY_VERSION: Final = 1
MAX_STATE_BYTES: Final = 4096
MAX_FLOOR: Final = (1 << 64) - 1


_STATE_KEYS: Final = frozenset({"release_floor", "tree_head", "version"})


class TrustStateError(Exception):
    """The client's trust state is unreadable or damaged; nothing was assumed."""


@dataclass(frozen=True)
class TrustState:
    """The highest release floor and the largest log tree head this client has verified."""

    release_floor: int = 0
    #: The largest signed tree head verified so far (``None``: none yet). Its
    #: signature was checked when it was stored; whoever reads it checks the
    #: next head's consistency with it.
    tree_head: SignedTreeHead | None = None

    def __post_init__(self) -> None:
        if type(self.release_floor) is not int or not 0 <= self.release_floor <= MAX_FLOOR:
            raise TrustStateError("a release floor is an integer in 0..2**64-1")
        if self.tree_head is not None and not isinstance(self.tree_head, SignedTreeHead):
            raise TrustStateError("a tree head is a SignedTreeHead")

    def raised_to(self, floor: int) -> TrustState:
        """This state with the floor raised to ``floor`` (never lowered)."""
        return TrustState(max(self.release_floor, floor), self.tree_head)

    def with_tree_head(self, tree_head: SignedTreeHead) -> TrustState:
        """This state keeping ``tree_head`` if it is larger than the stored one
        (the caller proved the two consistent; a smaller one is never stored)."""
        if self.tree_head is not None and tree_head.tree_size <= self.tree_head.tree_size:
            return self
        return TrustState(self.release_floor, tree_head)

    def encode(self) -> bytes:
        body: dict[str, object] = {
            "release_floor": self.release_floor,
            "version": STATE_FORMAT_VERSION,
        }
        if self.tree_head is not None:
            body["tree_head"] = self.tree_head.to_json_dict()
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> TrustState:
        if len(data) > MAX_STATE_BYTES:
            raise TrustStateError("the trust state file is too large")
        parsed: object = None
        if data.isascii():
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
        if (
            not isinstance(parsed, dict)
            or not {"release_floor", "version"} <= set(parsed) <= _STATE_KEYS
            or parsed["version"] not in (_FLOOR_ONLY_VERSION, STATE_FORMAT_VERSION)
            or (parsed["version"] == _FLOOR_ONLY_VERSION and "tree_head" in parsed)
            or type(parsed["release_floor"]) is not int
        ):
            raise TrustStateError("the trust state file is damaged; refusing to guess its floor")
        tree_head: SignedTreeHead | None = None
        damaged = False
        if "tree_head" in parsed:
            head = parsed["tree_head"]
            try:
                tree_head = SignedTreeHead.from_json_dict(head if isinstance(head, dict) else {})
            except TlogError:
                damaged = True
        if damaged:
            # Raised outside the handler; a damaged head is never read as none.
            raise TrustStateError("the trust state's tree head is damaged; refusing to forget it")
        return cls(parsed["release_floor"], tree_head)


class TrustStateFile:
    """A :class:`TrustState` kept in one file; a missing file is a new client."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def load(self) -> TrustState:
        try:
            with self._path.open("rb") as handle:
                data = handle.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return TrustState()
        except OSError as error:
            raise TrustStateError(f"cannot read the trust state ({type(error).__name__})") from None
        return TrustState.decode(data)

    def raise_floor(self, floor: int) -> TrustState:
        """Store ``max(stored floor, floor)`` and return it."""
        return self.advance(floor)

    def advance(self, floor: int, tree_head: SignedTreeHead | None = None) -> TrustState:
        """Store the floor raised to ``floor`` and, if given and larger, the
        tree head ``tree_head`` (proven consistent with the stored one by the
        caller); return what is stored."""
        current = self.load()
        advanced = current.raised_to(floor)
        if tree_head is not None:
            advanced = advanced.with_tree_head(tree_head)
        if advanced != current:
            self._write(advanced)
        return advanced

    def advance_if(
        self, expected: TrustState, floor: int, tree_head: SignedTreeHead | None = None
    ) -> TrustState | None:
        """As :meth:`advance`, but only if the stored state is still
        ``expected`` (what the caller's checks were made against); ``None``
        if another run changed it meanwhile (the caller checks again)."""
        with self._locked():
            current = self.load()
            if current != expected:
                return None
            return self.advance(floor, tree_head)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive advisory lock on a file next to the state (POSIX)."""
        if fcntl is None:  # pragma: no cover
            yield
            return
        lock_path = self._path.with_name(f".{self._path.name}.lock")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            handle = lock_path.open("ab")
        except OSError as error:
            raise TrustStateError(f"cannot lock the trust state ({type(error).__name__})") from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _write(self, state: TrustState) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # One temporary name per process: two clients sharing the file never
        # write into each other's temporary.
        temporary = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("wb") as handle:
                handle.write(state.encode())
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self._path)
        except OSError as error:
            raise TrustStateError(
                f"cannot write the trust state ({type(error).__name__})"
            ) from None
