"""A real scripted development cluster for the ``mantle`` command's tests.

``start_cluster`` boots ``nodes.devcluster.DevCluster`` (a keys node, an
ingress node and an inference node, each its own process on a simulated
NitroTPM, the scripted engine); :class:`Cluster` hands out the options of a
user holding its pins and certificate, and :func:`run_cli` runs ``mantle``
and checks it ended within a generous bound and without a traceback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from mantle import cli
from nodes.devcluster import ClusterLayout, DevCluster, DevClusterSettings, EngineKind

START_TIMEOUT_S = 120.0
#: Generous: the machine is shared; this catches a hang, not slowness.
COMMAND_TIMEOUT_S = 60.0


@dataclass
class Cluster:
    cluster: DevCluster
    layout: ClusterLayout
    base: Path

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def api_key(self) -> str:
        return self.cluster.api_key

    def trust(self, state: Path, **overrides: Path) -> list[str]:
        """``mantle verify``'s options for a user with the cluster's pins and certificate."""
        options = self._options(
            {
                "--pins": self.layout.pins_dir,
                "--tls-cert": self.cluster.tls_cert,
                "--release-dir": self.layout.release_dir,
                "--state": state,
            },
            overrides,
        )
        return [*options, "--api-key", self.api_key]

    def client(self, state: Path, **overrides: Path) -> list[str]:
        """``mantle chat``'s options (the end-to-end client's), API key included."""
        options = self._options(
            {
                "--pins": self.layout.pins_dir,
                "--tls-cert": self.cluster.tls_cert,
                "--state": state,
            },
            overrides,
        )
        return [*options, "--api-key", self.api_key]

    def receipt(self, **overrides: Path) -> list[str]:
        """``mantle receipt verify``'s options: the pins and the release bundle."""
        return self._options(
            {"--pins": self.layout.pins_dir, "--release-dir": self.layout.release_dir},
            overrides,
        )

    @staticmethod
    def _options(options: dict[str, Path], overrides: dict[str, Path]) -> list[str]:
        chosen = {**options, **{f"--{k.replace('_', '-')}": v for k, v in overrides.items()}}
        return [item for name, path in chosen.items() for item in (name, str(path))]


@contextlib.contextmanager
def start_cluster(base: Path) -> Iterator[Cluster]:
    settings = DevClusterSettings(
        data_dir=base / "dev",
        port=0,
        inference_nodes=1,
        engine=EngineKind.SCRIPTED,
        startup_timeout_s=START_TIMEOUT_S,
    )
    running = DevCluster(settings)
    try:
        anyio.run(running.start, backend="trio")
        yield Cluster(running, ClusterLayout(running.data_dir), base)
    finally:
        anyio.run(running.stop, backend="trio")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    started = time.monotonic()
    status = cli.main(argv)
    assert time.monotonic() - started < COMMAND_TIMEOUT_S
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return status, captured.out, captured.err


def chat_and_save(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], prompt: str
) -> Path:
    """``mantle chat --save-receipt``; the receipt file it wrote."""
    saved = tmp_path / "answer.receipt"
    argv = ["chat", cluster.url, *cluster.client(tmp_path / "chat-state.json")]
    status, _, err = run_cli(
        [*argv, "--max-tokens", "4", "--save-receipt", str(saved), prompt], capsys
    )
    assert status == 0, err
    return saved
