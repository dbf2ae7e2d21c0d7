"""Shared fixtures: the real data folder ``../shared`` and generated datasets."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # mediagen, synthdata

SHARED = TESTS.parents[1] / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the ../shared folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    return shared_path("clips")


@pytest.fixture(scope="session")
def dcase_dir() -> Path:
    return shared_path("dcase2017")
