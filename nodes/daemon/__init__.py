"""The node daemon: ``mantle-node run --config node.toml`` (docs/architecture.md §5).

* :mod:`nodes.daemon.config` -- the ``node.toml`` schema, strict (:class:`ConfigError`);
* :mod:`nodes.daemon.logs` -- JSON logs to standard error and ``node.log``,
  native libraries' output captured and reduced to ``native_output`` events;
* :mod:`nodes.daemon.tpm` -- the TPM backend (simulated, tpm2, nitrotpm) and
  the evidence verifier for peers;
* :mod:`nodes.daemon.roles` -- the composition of each role;
* :mod:`nodes.daemon.drain` -- refusing new work and finishing in-flight work on SIGTERM;
* :mod:`nodes.daemon.run` -- the sequence from config to drain, ``ready.json``
  and the exit statuses.
"""

from nodes.daemon.config import ConfigCheck, ConfigError, NodeConfig, load_config
from nodes.daemon.run import (
    EXIT_BOOT_REFUSED,
    EXIT_CONFIG,
    EXIT_DRAINED,
    EXIT_FAILED,
    ReadyReport,
    run_node,
)

__all__ = [
    "EXIT_BOOT_REFUSED",
    "EXIT_CONFIG",
    "EXIT_DRAINED",
    "EXIT_FAILED",
    "ConfigCheck",
    "ConfigError",
    "NodeConfig",
    "ReadyReport",
    "load_config",
    "run_node",
]
