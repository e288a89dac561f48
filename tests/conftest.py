"""Shared test configuration.

Async tests run on trio through anyio's pytest plugin: mark a module with
``pytestmark = pytest.mark.anyio`` (or a test with ``@pytest.mark.anyio``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

# Shared 2-core machines run the suite next to other work: a per-example
# deadline would turn load into flaky failures, so speed is left to
# benchmarks/. A failure prints the blob that reproduces it.
settings.register_profile("mantle", deadline=None, print_blob=True)
settings.load_profile("mantle")

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = REPO_ROOT / "tests" / "data"


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The vendored test data (Noise vectors, genuine Nitro documents; see each README)."""
    if not TEST_DATA.is_dir():
        pytest.fail(f"test data missing at {TEST_DATA}")
    return TEST_DATA
