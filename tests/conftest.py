"""Shared fixtures and test policy.

- Paths to ``../shared`` (golden data, datasets) come from ``shared_paths.py``, nowhere else.
- ``HM2BP_REQUIRE_GOLDEN=1`` (``.ci/run`` sets it): a skip of a ``golden`` test, or a skip whose reason is
  missing golden data or a missing C compiler, is reported as a failure, so CI cannot pass without having
  checked against the authors' data and the compiled kernels. CUDA-only variants may still skip.
- Markers (registered in pyproject.toml, ``--strict-markers``): ``requires("module", ...)`` skips unless the
  optional modules are installed; ``cuda`` skips without a CUDA device; ``slow`` is deselected by default
  (``-m slow`` or ``-m ''`` runs it).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from shared_paths import DATA, GOLDEN, REQUIRE_GOLDEN

_REQUIRED_SKIP_REASONS = ("golden", "c compiler")
"""Skip reasons (lower case) that HM2BP_REQUIRE_GOLDEN=1 turns into failures."""


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


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        missing = [m for m in mark.args if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"needs the optional package(s) {', '.join(missing)} (pip install -e '.[all,dev]')")
    if item.get_closest_marker("cuda") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if REQUIRE_GOLDEN and report.skipped:
        reason = _skip_reason(report)
        if item.get_closest_marker("cuda") is not None or "cuda" in reason.lower():
            return report  # CI has no GPU: a CUDA variant of a golden test may skip
        if item.get_closest_marker("golden") is not None or any(r in reason.lower() for r in _REQUIRED_SKIP_REASONS):
            report.outcome = "failed"
            report.longrepr = f"HM2BP_REQUIRE_GOLDEN=1, so this skip is a failure: {reason}"
    return report
