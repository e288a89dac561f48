"""The files a dev cluster hands its nodes: ``node.toml`` per node and ``tenants.toml``.

The schema is the daemon's (``mantle-node run --config``); every path is
written absolute, so nothing depends on where a node is started from. Ports
are ``127.0.0.1:0`` (chosen by each node and reported in its
``ready.json``) except the ingress's HTTPS port, which the user chose.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mantle import ATTESTATION_ROOT_PIN, LOG_KEY_PIN, RELEASE_ROOT_PIN
from nodes.devcluster._layout import ClusterLayout
from nodes.devcluster._toml import Document, dumps

LOOPBACK: Final = "127.0.0.1"
KEYS_NODE: Final = "keys-1"
INGRESS_NODE: Final = "ingress-1"
#: The tenant every dev cluster's API key belongs to.
DEV_TENANT: Final = "dev"
API_KEY_PREFIX: Final = "sk-mantle-"
#: Random bytes in a generated API key (hex-encoded after the prefix).
API_KEY_BYTES: Final = 24
#: How long a node drains on SIGTERM (the stop grace period is longer).
DRAIN_DEADLINE_S: Final = 5


class EngineKind(enum.StrEnum):
    """What the inference nodes run: the real model, or the scripted engine."""

    LLAMA = "llama"
    SCRIPTED = "scripted"


def inference_node(index: int) -> str:
    """The name of the ``index``-th inference node (from 1)."""
    return f"inference-{index}"


def new_api_key(token_bytes: bytes) -> str:
    """An API key from fresh random bytes: ``sk-mantle-`` and their hex."""
    if len(token_bytes) < 16:
        raise ValueError("an API key needs at least 16 random bytes")
    return API_KEY_PREFIX + token_bytes.hex()


def api_key_sha256(api_key: str) -> str:
    """What ``tenants.toml`` stores for a key: the hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def api_key_matches(api_key: str, key_sha256: str) -> bool:
    """Whether ``api_key`` is the key stored as ``key_sha256`` (constant time)."""
    return hmac.compare_digest(api_key_sha256(api_key), key_sha256)


def tenants_document(api_key: str) -> Document:
    return {"tenants": [{"id": DEV_TENANT, "key_sha256": api_key_sha256(api_key)}]}


def write_tenants(layout: ClusterLayout, api_key: str) -> Path:
    """``tenants.toml`` with the one dev tenant; the key itself is never written."""
    layout.tenants.write_text(dumps(tenants_document(api_key)))
    layout.tenants.chmod(0o600)
    return layout.tenants


@dataclass(frozen=True)
class InferenceSettings:
    """What every inference node of the cluster serves."""

    model_id: str
    engine: EngineKind
    #: The sealed weights (the llama engine only).
    sealed_model: Path | None
    slots: int = 1
    #: The scripted engine only: seconds before each chunk (``None``: at once).
    token_interval_s: float | None = None


def _common(layout: ClusterLayout, node: str, roles: Sequence[str]) -> dict[str, object]:
    pins = layout.pins_dir
    return {
        "node": node,
        "roles": list(roles),
        "data_dir": str(layout.node_dir(node)),
        # Shorter than the dev cluster's stop grace period, so a node finishes
        # draining before it would be killed.
        "drain_deadline_s": DRAIN_DEADLINE_S,
        "tpm": {
            # Development only: the daemon logs and reports a simulated TPM as such.
            "backend": "simulated",
            "pki_seed_file": str(layout.pki_seed_file),
            "seed_file": str(layout.tpm_seed_file(node)),
        },
        "release": {
            "bundle": str(layout.release_dir),
            "install_root": str(layout.install_root),
        },
        "trust": {
            "attestation_root": str(pins / ATTESTATION_ROOT_PIN),
            "release_root": str(pins / RELEASE_ROOT_PIN),
            "log_key": str(pins / LOG_KEY_PIN),
        },
    }


def keys_node_document(layout: ClusterLayout) -> Document:
    document = _common(layout, KEYS_NODE, ["keys"])
    document["link"] = {"listen": f"{LOOPBACK}:0", "peers": []}
    document["keys"] = {"listen": f"{LOOPBACK}:0"}
    return document  # type: ignore[return-value]


def ingress_node_document(
    layout: ClusterLayout,
    https_port: int,
    *,
    max_queued: int | None = None,
    max_queued_per_tenant: int | None = None,
) -> Document:
    document = _common(layout, INGRESS_NODE, ["ingress"])
    # Inference nodes join the ingress: it dials nobody.
    document["link"] = {"listen": f"{LOOPBACK}:0", "peers": []}
    ingress: dict[str, object] = {
        "listen": f"{LOOPBACK}:{https_port}",
        "tenants": str(layout.tenants),
        "tlog": str(layout.tlog),
    }
    if max_queued is not None:
        ingress["max_queued"] = max_queued
    if max_queued_per_tenant is not None:
        ingress["max_queued_per_tenant"] = max_queued_per_tenant
    document["ingress"] = ingress
    return document  # type: ignore[return-value]


def inference_node_document(
    layout: ClusterLayout,
    node: str,
    settings: InferenceSettings,
    *,
    ingress_link_port: int,
    keys_port: int,
) -> Document:
    document = _common(layout, node, ["inference"])
    document["link"] = {
        "listen": f"{LOOPBACK}:0",
        "peers": [{"node": INGRESS_NODE, "address": f"{LOOPBACK}:{ingress_link_port}"}],
    }
    inference: dict[str, object] = {
        "model": settings.model_id,
        "engine": settings.engine.value,
        "scheduler_node": INGRESS_NODE,
        "slots": settings.slots,
    }
    if settings.engine is EngineKind.LLAMA:
        # The scripted engine has no weights and asks for no key.
        if settings.sealed_model is None:
            raise ValueError("the llama engine serves sealed weights: none given")
        inference["sealed_model"] = str(settings.sealed_model)
        inference["keys_address"] = f"{LOOPBACK}:{keys_port}"
    elif settings.token_interval_s is not None:
        inference["token_interval_s"] = settings.token_interval_s
    document["inference"] = inference
    return document  # type: ignore[return-value]


def write_node_config(layout: ClusterLayout, node: str, document: Document) -> Path:
    """Write ``node``'s ``node.toml`` into its (new) directory."""
    layout.node_dir(node).mkdir(mode=0o700, parents=True, exist_ok=True)
    path = layout.node_config(node)
    path.write_text(dumps(document))
    return path
