"""Bounds on configuration values that are legal numbers but cannot give a working run.

Called from the config sections' checks (one line each), so that a value that would overflow float32,
ask for terabytes, or crash deep inside torch is refused up front, naming its key. Torch-free.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["MAX_CUDA_INDEX", "MAX_N_SWAPS", "MAX_TAU", "check_model_bounds", "check_train_bounds", "fits_float32"]

#: Threshold offset of FC and pool layers (docs/algorithm.md §1.1); a threshold at or below it never waits for input.
THETA_EPS = 1e-6
#: Time constants (steps) beyond this leave a leak below float32 resolution; 1e308 overflows to inf.
MAX_TAU = 1e7
#: train.n_swaps: each swap holds two int64 indices before it is applied (10⁸ swaps ≈ 1.6 GB).
MAX_N_SWAPS = 10**8
MAX_CUDA_INDEX = 1023


def fits_float32(v: float) -> bool:
    """True when ``v`` is finite and stays finite (not inf) as float32, the dtype of every tensor here."""
    return math.isfinite(v) and abs(v) <= _F32_MAX


_F32_MAX = float(np.finfo(np.float32).max)


def _fail(key: str, problem: str) -> None:
    raise ConfigError(f"{key}: {problem}")


def check_model_bounds(m: Any) -> None:
    """``model.*``: thresholds, time constants and initial weights that float32 can hold and that can spike."""
    for v in m.thresholds:
        if not fits_float32(v):
            _fail("model.thresholds", f"{v!r} does not fit float32 (max {float(np.finfo(np.float32).max):.4g}): "
                                      f"the layer would never fire; got {list(m.thresholds)}")
        if v <= THETA_EPS:
            _fail("model.thresholds", f"{v!r} is not above the threshold offset theta_eps = {THETA_EPS:g} of FC and "
                                      f"pool layers (spike test v > threshold − theta_eps); got {list(m.thresholds)}")
    for key in ("tau_m", "tau_s"):
        v = getattr(m, key)
        if not 1.0 <= v <= MAX_TAU:
            _fail(f"model.{key}", f"must lie in [1, {MAX_TAU:g}] steps (below 1 the Euler step overshoots, above "
                                  f"the leak vanishes in float32); got {v!r}")
    for key in ("fc_init", "conv_init"):
        v = getattr(m, key)
        if not fits_float32(v):
            _fail(f"model.{key}", f"{v!r} does not fit float32: the initial weights would be inf")


def check_train_bounds(t: Any) -> None:
    """``train.*``: counts that drive allocations, and a device index torch can parse."""
    if t.n_swaps > MAX_N_SWAPS:
        _fail("train.n_swaps", f"at most {MAX_N_SWAPS:,} swaps per epoch (each costs 16 bytes before it is "
                               f"applied: {t.n_swaps:,} would need {16 * t.n_swaps / 2**30:,.0f} GiB); got {t.n_swaps:,}")
    dev = str(t.device)
    if dev.startswith("cuda:") and dev[5:].isdigit() and int(dev[5:]) > MAX_CUDA_INDEX:
        _fail("train.device", f"CUDA device index {dev[5:]} is out of range (0…{MAX_CUDA_INDEX})")
    if not fits_float32(t.lr):
        _fail("train.lr", f"{t.lr!r} does not fit float32")
