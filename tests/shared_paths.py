"""Where the read-only shared material lives: ``../shared`` beside the repository (``HM2BP_SHARED_DIR``
overrides it). The one place tests get these paths from (``pythonpath = ["tests"]`` in pyproject.toml)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HM2BP_SHARED_DIR", REPO.parent / "shared"))
GOLDEN_ROOT = SHARED / "golden"
"""The authors' golden data (``mm-bp-snn/`` below it)."""
GOLDEN = Path(os.environ.get("HM2BP_GOLDEN_DIR", GOLDEN_ROOT / "mm-bp-snn"))
DATA = SHARED / "data"
"""The real datasets: ``mnist/``, ``emnist/``, ``nmnist/``, ``fsdd/``."""

REQUIRE_GOLDEN = os.environ.get("HM2BP_REQUIRE_GOLDEN", "") not in ("", "0")
"""Set by ``.ci/run``: a test that would skip for want of the golden data or of a C compiler fails."""
