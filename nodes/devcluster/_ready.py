"""Reading a node's ``ready.json``: the daemon writes it atomically once the node serves.

``{"node": str, "pid": int, "roles": [...], "link_port": int, "keys_port": int|null,
"https_port": int|null, "tls_cert": str|null, "simulated_tpm": bool}``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nodes.devcluster._errors import DevClusterCheck, DevClusterError

MAX_READY_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class ReadyNode:
    """What a serving node reported about itself."""

    node: str
    pid: int
    roles: tuple[str, ...]
    link_port: int
    keys_port: int | None
    https_port: int | None
    tls_cert: Path | None
    simulated_tpm: bool


def _port(value: object, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError("a port is a whole number from 1 to 65535")
    return value


def parse_ready(data: bytes) -> ReadyNode:
    """A ``ready.json``'s fields, checked; :class:`ValueError` names what is wrong."""
    document = json.loads(data)
    if not isinstance(document, dict):
        raise ValueError("ready.json is not an object")
    node, pid, roles = document.get("node"), document.get("pid"), document.get("roles")
    if not isinstance(node, str):
        raise ValueError("ready.json has no node name")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError("ready.json has no process id")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise ValueError("ready.json has no list of roles")
    cert = document.get("tls_cert")
    if cert is not None and not isinstance(cert, str):
        raise ValueError("ready.json's tls_cert is not a path")
    simulated = document.get("simulated_tpm")
    if not isinstance(simulated, bool):
        raise ValueError("ready.json does not say whether its TPM is simulated")
    link_port = _port(document.get("link_port"), optional=False)
    assert link_port is not None
    return ReadyNode(
        node=node,
        pid=pid,
        roles=tuple(roles),
        link_port=link_port,
        keys_port=_port(document.get("keys_port"), optional=True),
        https_port=_port(document.get("https_port"), optional=True),
        tls_cert=None if cert is None else Path(cert),
        simulated_tpm=simulated,
    )


def read_ready(
    path: Path, *, node: str, pid: int, log_path: Path, logs: str = ""
) -> ReadyNode | None:
    """``node``'s ready file once written (``None`` before); a file that does not
    parse, names another node or process, or reports a real TPM is an error."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_READY_BYTES + 1)
    except FileNotFoundError:
        return None
    problem: str | None = None
    ready: ReadyNode | None = None
    if len(data) > MAX_READY_BYTES:
        problem = "is too large"
    else:
        try:
            ready = parse_ready(data)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            problem = f"does not parse ({type(exc).__name__}: {exc})"
    if ready is not None and ready.node != node:
        problem = "names another node"
    elif ready is not None and ready.pid != pid:
        problem = f"names process {ready.pid}, not the started {pid}"
    elif ready is not None and not ready.simulated_tpm:
        problem = "reports a TPM that is not simulated; the dev cluster starts simulated ones only"
    if problem is not None:
        raise DevClusterError(
            DevClusterCheck.NODE_READY,
            f"{node}'s {path} {problem} ({logs or f'log: {log_path}'})",
            node=node,
            log_path=log_path,
        )
    return ready
