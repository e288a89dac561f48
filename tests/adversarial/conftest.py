"""Fixtures the release-counter attacks share: each attack runs on every kind
of machine (the simulated NitroTPM and swtpm) with a fresh release kit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _counter_machines import MACHINE_KINDS, Machine, open_machine
from _release_kit import ReleaseKit


@pytest.fixture(params=MACHINE_KINDS)
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Machine]:
    with open_machine(request.param, tmp_path / "machine") as opened:
        yield opened


@pytest.fixture
def kit(tmp_path: Path) -> ReleaseKit:
    return ReleaseKit(install_root=tmp_path / "install")
