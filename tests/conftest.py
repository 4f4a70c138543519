"""Shared test helpers: the read-only real fixtures beside the repo, skipped cleanly when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"

# Whether the suite runs under CI, read before the line below sets CI for everyone: tests of services CI provides
# (PostgreSQL) skip only on a developer machine without them.
UNDER_CI = bool(os.environ.get("CI"))
os.environ.setdefault("CI", "1")  # no progress bars in test logs


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is absent (real samples are not part of the repository)")
    return SHARED_FIXTURES


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``): on two
    shared cores, OpenMP workers waiting for a busy core make every small forward pass many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
