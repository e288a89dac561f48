"""Where a development cluster keeps everything: one data directory.

::

    <data_dir>/
      mantle-dev.json          marks the directory as a dev cluster's (and as simulated)
      simulated-tpm/           the simulated cloud PKI's seed and each node's TPM seed (0600)
      pins/                    attestation root (simulated PKI), release root, log public key
      tlog.sqlite              the transparency log the release is appended to
      release/                 the release bundle (``mantle-node release`` layout)
      install/                 the installed artifacts the nodes verify at boot
      model-provider.key       the model provider's static key (hex, 0600)
      models/<id>.sealed       the sealed weights (llama engine only)
      tenants.toml             the API key's SHA-256 (never the key)
      nodes/<name>/            node.toml, node.log (its log), console.log (its stdout and
                               stderr), ready.json, state

Every start rebuilds all of it: a simulated TPM keeps its NV counters in
memory, so a node's state from an earlier run (counter bindings, keyring)
could not be reopened anyway, and the release signers' keys live only in the
process that signed. A reused directory is emptied of these entries first,
and only if it is empty or carries the marker: a directory holding anything
else is refused rather than cleared.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MARKER: Final = "mantle-dev.json"
#: The entries a dev cluster writes into its data directory (and clears on a rerun).
OWNED_ENTRIES: Final = (
    "simulated-tpm",
    "pins",
    "tlog.sqlite",
    "tlog.sqlite-journal",
    "tlog.sqlite-wal",
    "tlog.sqlite-shm",
    "release",
    "install",
    "model-provider.key",
    "models",
    "tenants.toml",
    "nodes",
    "client",
)


class DataDirRefused(Exception):
    """The data directory holds files that are not a dev cluster's."""


@dataclass(frozen=True)
class ClusterLayout:
    """The paths of one dev cluster's data directory (module docstring)."""

    data_dir: Path

    @property
    def marker(self) -> Path:
        return self.data_dir / MARKER

    @property
    def seeds_dir(self) -> Path:
        return self.data_dir / "simulated-tpm"

    @property
    def pki_seed_file(self) -> Path:
        return self.seeds_dir / "pki.seed"

    def tpm_seed_file(self, node: str) -> Path:
        return self.seeds_dir / f"{node}.seed"

    @property
    def pins_dir(self) -> Path:
        return self.data_dir / "pins"

    @property
    def tlog(self) -> Path:
        return self.data_dir / "tlog.sqlite"

    @property
    def release_dir(self) -> Path:
        return self.data_dir / "release"

    @property
    def install_root(self) -> Path:
        return self.data_dir / "install"

    @property
    def provider_key(self) -> Path:
        return self.data_dir / "model-provider.key"

    def sealed_model(self, model_id: str) -> Path:
        return self.data_dir / "models" / f"{model_id}.sealed"

    @property
    def tenants(self) -> Path:
        return self.data_dir / "tenants.toml"

    @property
    def client_state(self) -> Path:
        """The dev tool's own trust state as a client of its release (its floor)."""
        return self.data_dir / "client" / "trust.json"

    def node_dir(self, node: str) -> Path:
        return self.data_dir / "nodes" / node

    def node_config(self, node: str) -> Path:
        return self.node_dir(node) / "node.toml"

    def node_log(self, node: str) -> Path:
        """The node's own log (the daemon writes it)."""
        return self.node_dir(node) / "node.log"

    def node_console(self, node: str) -> Path:
        """The node process's stdout and stderr (whatever it prints before or
        outside its log: usage errors, an interpreter's last words)."""
        return self.node_dir(node) / "console.log"

    def ready_file(self, node: str) -> Path:
        return self.node_dir(node) / "ready.json"

    def prepare(self) -> None:
        """Create the directory (0700), or clear a dev cluster's earlier run from it."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        present = {entry.name for entry in self.data_dir.iterdir()}
        if present and MARKER not in present:
            raise DataDirRefused(
                f"{self.data_dir} is not empty and is no mantle-node dev data directory"
                f" (no {MARKER}); choose an empty or new directory"
            )
        for name in OWNED_ENTRIES:
            path = self.data_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        self.marker.write_text(
            json.dumps(
                {
                    "what": "mantle-node dev data directory",
                    "simulated_tpm": True,
                    "note": "SIMULATED NitroTPMs and a simulated attestation PKI:"
                    " development only, nothing here is evidence about hardware",
                },
                indent=2,
            )
            + "\n"
        )
        for directory in (self.seeds_dir, self.pins_dir, self.data_dir / "nodes"):
            directory.mkdir(mode=0o700, exist_ok=True)


def write_secret_file(path: Path, data: bytes) -> None:
    """A new file readable by its owner only (0600), never over an existing one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
