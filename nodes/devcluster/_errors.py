"""The dev cluster's typed errors: each names what failed and, for a node, its log."""

from __future__ import annotations

import enum
from pathlib import Path


class DevClusterCheck(enum.StrEnum):
    """What stopped a dev cluster."""

    DATA_DIR = "data_dir"
    MODEL = "model"
    NODE_EXITED = "node_exited"
    NODE_READY = "node_ready"
    STARTUP_TIMEOUT = "startup_timeout"
    KEY_IMPORT = "key_import"
    NOT_SERVING = "not_serving"


class DevClusterError(Exception):
    """A dev cluster could not start or stopped serving; ``node`` and
    ``log_path`` name the node concerned, when one is."""

    def __init__(
        self,
        check: DevClusterCheck,
        message: str,
        *,
        node: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.check = check
        self.node = node
        self.log_path = log_path


class NodeExited(DevClusterError):
    """A node process ended while the cluster needed it."""

    def __init__(self, node: str, log_path: Path, returncode: int, *, logs: str = "") -> None:
        how = (
            f"was killed by signal {-returncode}"
            if returncode < 0
            else f"exited with status {returncode}"
        )
        super().__init__(
            DevClusterCheck.NODE_EXITED,
            f"node {node} {how} ({logs or f'log: {log_path}'})",
            node=node,
            log_path=log_path,
        )
        self.returncode = returncode
