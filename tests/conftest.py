"""Shared fixtures: the real data folder ``../shared`` and generated datasets."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SHARED = TESTS.parents[1] / "shared"


def _reads_shared(func) -> bool:
    try:
        return "shared_path(" in inspect.getsource(func)
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that read ../shared (:func:`shared_path` in the test or in one of its fixtures) carry
    the ``shared`` marker: ``pytest -m "not shared"`` runs what a machine without the folder can run."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        fixtures = [d.func for defs in (info.name2fixturedefs.values() if info else ()) for d in defs]
        if any(_reads_shared(f) for f in [getattr(item, "function", None), *fixtures]):
            item.add_marker(pytest.mark.shared)


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
