"""A release bundle: the three metadata files a node and a client are handed.

Layout of a release directory (written by ``mantle-node release`` and
``mantle-node tlog append``, read by boot and by the client)::

    root.json        TUF root: release-signer keys and threshold
    targets.json     TUF targets: artifacts, version, expiry, signatures
    log-proof.json   tree head + inclusion path for the release's log entry

Nothing in a bundle is trusted for what it says about itself: the release
root and the log key it is checked against are pins the reader holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT_FILE: Final = "root.json"
TARGETS_FILE: Final = "targets.json"
LOG_PROOF_FILE: Final = "log-proof.json"


@dataclass(frozen=True, slots=True)
class ReleaseDirectory:
    """Where a release's metadata files live."""

    path: Path

    @property
    def root(self) -> Path:
        return self.path / ROOT_FILE

    @property
    def targets(self) -> Path:
        return self.path / TARGETS_FILE

    @property
    def log_proof(self) -> Path:
        return self.path / LOG_PROOF_FILE
