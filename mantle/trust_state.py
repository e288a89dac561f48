"""What a client remembers between runs so that the operator cannot wind it back.

The release signers publish a floor with every release (``min_version``): no
release below it may get a prompt. A verifier that only ever sees what the
operator hands it can be given an old, still validly signed and logged bundle
whose own floor is low, and would accept it. The client therefore keeps the
highest floor it has ever verified, on its own disk (the customer's machine,
which the operator does not control), and refuses every release below it from
then on. The floor only rises: a stored floor is never lowered, and a damaged
state file is refused rather than read as zero.

The file is small canonical JSON, ``{"release_floor": N, "version": 1}``,
written atomically (a temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

STATE_FORMAT_VERSION: Final = 1
MAX_STATE_BYTES: Final = 4096
MAX_FLOOR: Final = (1 << 64) - 1


class TrustStateError(Exception):
    """The client's trust state is unreadable or damaged; nothing was assumed."""


@dataclass(frozen=True)
class TrustState:
    """The highest release floor this client has verified."""

    release_floor: int = 0

    def __post_init__(self) -> None:
        if type(self.release_floor) is not int or not 0 <= self.release_floor <= MAX_FLOOR:
            raise TrustStateError("a release floor is an integer in 0..2**64-1")

    def raised_to(self, floor: int) -> TrustState:
        """This state with the floor raised to ``floor`` (never lowered)."""
        return TrustState(max(self.release_floor, floor))

    def encode(self) -> bytes:
        body = {"release_floor": self.release_floor, "version": STATE_FORMAT_VERSION}
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
            or set(parsed) != {"release_floor", "version"}
            or parsed["version"] != STATE_FORMAT_VERSION
            or type(parsed["release_floor"]) is not int
        ):
            raise TrustStateError("the trust state file is damaged; refusing to guess its floor")
        return cls(parsed["release_floor"])


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
        current = self.load()
        raised = current.raised_to(floor)
        if raised != current:
            self._write(raised)
        return raised

    def _write(self, state: TrustState) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_name(f".{self._path.name}.tmp")
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
