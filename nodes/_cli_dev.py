"""``mantle-node dev``: run a local cluster (simulated NitroTPMs) until interrupted.

Prints exactly five lines on stdout once the ingress serves -- its URL, the
API key, the ingress's TLS certificate, the (simulated) attestation root and
the transparency log's key -- and nothing else there; progress and errors go
to stderr. SIGINT or SIGTERM stops every node (SIGTERM, then SIGKILL after
a grace period) and exits 0. A node that exits, during start-up or later, is
named on stderr with its logs, the cluster is stopped and the exit status is
1. Without ``--data-dir`` the state lives in a fresh temporary directory,
removed after a clean stop and kept (for its logs) after a failure; with it,
the directory is reused and everything in it rebuilt on each start.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any, Final, TextIO

import anyio

from mantle.commands import IntegerIn
from nodes.devcluster import (
    DEFAULT_INFERENCE_NODES,
    DEFAULT_PORT,
    DEFAULT_STARTUP_TIMEOUT_S,
    MAX_INFERENCE_NODES,
    DevCluster,
    DevClusterError,
    DevClusterSettings,
    EngineKind,
)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
MAX_STARTUP_TIMEOUT_S: Final = 3600


async def serve(settings: DevClusterSettings, out: TextIO, err: TextIO) -> int:
    """Start the cluster, print its five lines, run until a signal or a node's exit."""
    cluster = DevCluster(settings, say=err)
    status = EXIT_OK
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as group:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    group.cancel_scope.cancel()
                    return

            group.start_soon(stop_on_signal)
            try:
                await cluster.start()
                out.write("\n".join(cluster.endpoints.lines()) + "\n")
                out.flush()
                exited = await cluster.wait()
                err.write(f"mantle-node dev: {exited}; stopping the cluster\n")
                status = EXIT_FAILED
            except DevClusterError as failed:
                err.write(f"mantle-node dev: {failed}\n")
                status = EXIT_FAILED
            except OSError as failed:
                err.write(
                    f"mantle-node dev: {failed.strerror or failed}: {failed.filename or ''}\n"
                )
                status = EXIT_FAILED
            finally:
                with anyio.CancelScope(shield=True):
                    await cluster.stop()
            group.cancel_scope.cancel()
    return status


def _dev(args: argparse.Namespace) -> int:
    try:
        settings = DevClusterSettings(
            data_dir=args.data_dir,
            port=args.port,
            api_key=args.api_key,
            inference_nodes=args.inference_nodes,
            engine=EngineKind(args.engine),
            model=args.model,
            model_id=args.model_id,
            startup_timeout_s=args.startup_timeout,
        )
    except ValueError as invalid:
        print(f"mantle-node dev: {invalid}", file=sys.stderr)
        return EXIT_USAGE
    status: int = anyio.run(serve, settings, sys.stdout, sys.stderr, backend="trio")
    return status


def register(subparsers: Any) -> None:
    """Add ``dev`` to ``mantle-node``."""
    p = subparsers.add_parser(
        "dev",
        help="run a local cluster on simulated NitroTPMs (development only)",
        description=(
            "Start a keys node, an ingress node and N inference nodes as separate"
            " processes on SIMULATED NitroTPMs, with a release signed and logged on the"
            " fly; print the ingress URL, the API key, the TLS cert, the attestation"
            " root and the log key; run until interrupted."
        ),
    )
    p.add_argument(
        "--port",
        type=IntegerIn(0, 65535),
        default=DEFAULT_PORT,
        help=f"the ingress's HTTPS port on 127.0.0.1 (0: any free port; default {DEFAULT_PORT})",
    )
    p.add_argument("--api-key", help="the API key to accept (default: a fresh sk-mantle-… key)")
    p.add_argument(
        "--inference-nodes",
        type=IntegerIn(1, MAX_INFERENCE_NODES),
        default=DEFAULT_INFERENCE_NODES,
    )
    p.add_argument(
        "--engine",
        choices=[kind.value for kind in EngineKind],
        default=EngineKind.LLAMA.value,
        help="llama: the real model; scripted: a deterministic engine, no model (load tests)",
    )
    p.add_argument("--model", type=Path, help="a GGUF for the llama engine (default: SmolLM2)")
    p.add_argument("--model-id", help="the model's id (default: from the model file)")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="state and logs (default: a fresh temporary directory); rebuilt on each start",
    )
    p.add_argument(
        "--startup-timeout",
        type=IntegerIn(1, MAX_STARTUP_TIMEOUT_S),
        default=DEFAULT_STARTUP_TIMEOUT_S,
        help="seconds",
    )
    p.set_defaults(handler=_dev)
