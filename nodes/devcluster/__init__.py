"""``mantle-node dev``: a local cluster of node processes on simulated NitroTPMs.

A keys node, an ingress node and N inference nodes, each its own
``mantle-node run --config`` process, on a release built, signed and logged
on the fly, with the model's data key imported by the model provider's key
over a channel on which the keys node proved its attestation. Everything is
marked as simulated: the TPMs, their PKI (a root created for this run), the
data directory's marker and the daemon's own reports.

* :class:`DevCluster` (``async with DevCluster(DevClusterSettings(...)) as c``)
  starts it and exposes :attr:`~DevCluster.endpoints` (url, api key, TLS cert,
  attestation root, log key); ``mantle-node dev`` is its command line
  (:mod:`nodes._cli_dev`).
* The pieces, usable alone: :class:`ClusterLayout` (the data directory),
  :func:`build_dev_release`, the ``node.toml`` and ``tenants.toml`` writers,
  :class:`ProcessSupervisor` (children: start, watch, stop).
"""

from nodes.devcluster._cluster import (
    DEFAULT_INFERENCE_NODES,
    DEFAULT_PORT,
    DEFAULT_STARTUP_TIMEOUT_S,
    DEMO_MODEL_ID,
    MAX_INFERENCE_NODES,
    SCRIPTED_MODEL_ID,
    ClusterEndpoints,
    DevCluster,
    DevClusterSettings,
    demo_model_path,
    model_id_for,
)
from nodes.devcluster._config import (
    DEV_TENANT,
    INGRESS_NODE,
    KEYS_NODE,
    EngineKind,
    InferenceSettings,
    api_key_matches,
    api_key_sha256,
    inference_node,
    inference_node_document,
    ingress_node_document,
    keys_node_document,
    new_api_key,
    write_node_config,
    write_tenants,
)
from nodes.devcluster._errors import DevClusterCheck, DevClusterError, NodeExited
from nodes.devcluster._layout import ClusterLayout, DataDirRefused
from nodes.devcluster._probe import lists_model
from nodes.devcluster._process import NodeProcess, ProcessSupervisor
from nodes.devcluster._provision import (
    KEY_VERSION,
    connect_to_keys_node,
    provision_model,
)
from nodes.devcluster._ready import ReadyNode, parse_ready, read_ready
from nodes.devcluster._release import (
    SCRIPTED_MODEL_MARKER,
    DevRelease,
    build_dev_release,
    cluster_config,
    model_artifact,
)
from nodes.devcluster._toml import dumps as toml_dumps

__all__ = [
    "DEFAULT_INFERENCE_NODES",
    "DEFAULT_PORT",
    "DEFAULT_STARTUP_TIMEOUT_S",
    "DEMO_MODEL_ID",
    "DEV_TENANT",
    "INGRESS_NODE",
    "KEYS_NODE",
    "KEY_VERSION",
    "MAX_INFERENCE_NODES",
    "SCRIPTED_MODEL_ID",
    "SCRIPTED_MODEL_MARKER",
    "ClusterEndpoints",
    "ClusterLayout",
    "DataDirRefused",
    "DevCluster",
    "DevClusterCheck",
    "DevClusterError",
    "DevClusterSettings",
    "DevRelease",
    "EngineKind",
    "InferenceSettings",
    "NodeExited",
    "NodeProcess",
    "ProcessSupervisor",
    "ReadyNode",
    "api_key_matches",
    "api_key_sha256",
    "build_dev_release",
    "cluster_config",
    "connect_to_keys_node",
    "demo_model_path",
    "inference_node",
    "inference_node_document",
    "ingress_node_document",
    "keys_node_document",
    "lists_model",
    "model_artifact",
    "model_id_for",
    "new_api_key",
    "parse_ready",
    "provision_model",
    "read_ready",
    "toml_dumps",
    "write_node_config",
    "write_tenants",
]
