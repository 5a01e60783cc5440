"""Shared fixtures: where the authors' golden data and the real datasets live (../shared beside the repo)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden" / "mm-bp-snn"
DATA = SHARED / "data"


@pytest.fixture(autouse=True, scope="session")
def _feature_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Speech features the tests compute are cached in a temporary folder, not in ~/.cache."""
    before = os.environ.get("HM2BP_CACHE")
    os.environ["HM2BP_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))
    yield
    if before is None:
        os.environ.pop("HM2BP_CACHE", None)
    else:
        os.environ["HM2BP_CACHE"] = before


@pytest.fixture
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden data not found at {GOLDEN} (place the authors' mm-bp-snn golden files there)")
    return GOLDEN


@pytest.fixture
def mnist_dir() -> Path:
    path = DATA / "mnist"
    if not (path / "t10k-images-idx3-ubyte.gz").exists() and not (path / "t10k-images-idx3-ubyte").exists():
        pytest.skip(f"MNIST not found at {path} (place the four IDX files there)")
    return path
