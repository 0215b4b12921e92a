"""Shared test configuration: Prefect state in a temporary folder, the shared data path."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Prefect must see its home before it is imported anywhere in the test session.
_TEST_HOME = Path(tempfile.mkdtemp(prefix="mocap2to3-test-"))
os.environ.setdefault("MOCAP2TO3_HOME", str(_TEST_HOME))
os.environ.setdefault("PREFECT_HOME", str(_TEST_HOME / "prefect"))

from data_catalog.paths import configure_prefect_environment, shared_data_dir  # noqa: E402

configure_prefect_environment()

SHARED_DATA = shared_data_dir()
BANDAI = SHARED_DATA / "bandai-namco-motion"


@pytest.fixture
def bandai_dir() -> Path:
    """The Bandai-Namco data folder; skips the test when ../shared/data is absent."""
    if not BANDAI.is_dir():
        pytest.skip(f"real data not available: {BANDAI} is absent")
    return BANDAI
