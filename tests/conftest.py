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
