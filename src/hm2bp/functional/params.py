"""Neuron constants shared by the forward simulation and the HM2-BP backward pass."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class NeuronParams:
    """Constants of one layer's discrete-time LIF neurons (docs/algorithm.md §1.1).

    Args:
        v_th: firing threshold ν.
        tau_m: membrane time constant τ_m in steps (64 in every config of the paper).
        tau_s: synaptic time constant τ_s in steps (8).
        t_ref: refractory period T_ref in steps (2).
        theta_eps: the threshold test is ``v > v_th - theta_eps``; 1e-6 for FC, output and
            pooling layers, 0 for conv layers (docs/algorithm.md §1.1 step 6).
        window: S-PSP look-back window in steps; the authors use 4·τ_m (docs/algorithm.md §2).
    """

    v_th: float
    tau_m: float = 64.0
    tau_s: float = 8.0
    t_ref: int = 2
    theta_eps: float = 1e-6
    window: int | None = None

    def __post_init__(self) -> None:
        for name in ("v_th", "tau_m", "tau_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"NeuronParams.{name} must be a positive finite number, got {value!r}")
        if self.tau_m == self.tau_s:
            raise ConfigError("NeuronParams: tau_m and tau_s must differ (the PSP kernel divides by 1 - tau_s/tau_m)")
        if not isinstance(self.t_ref, int) or self.t_ref < 0:
            raise ConfigError(f"NeuronParams.t_ref must be a non-negative integer, got {self.t_ref!r}")
        if self.theta_eps < 0 or self.theta_eps >= self.v_th:
            raise ConfigError(f"NeuronParams.theta_eps must be in [0, v_th), got {self.theta_eps!r}")
        if self.window is not None and (not isinstance(self.window, int) or self.window < 1):
            raise ConfigError(f"NeuronParams.window must be a positive integer, got {self.window!r}")

    @property
    def psp_window(self) -> int:
        """Look-back window of the S-PSP in steps (4·τ_m unless set)."""
        return self.window if self.window is not None else int(4 * self.tau_m)

    @property
    def threshold32(self) -> float:
        """The float32 threshold θ of the float32 kernels (spike when ``v > θ``): the authors' kernels store
        ``float threshold = vth - 1e-6``, i.e. the double ν − eps rounded to the nearest float32, and compare
        the float32 potential with it (for ν = 8: 7.99999905, one float32 step above the largest float32 not
        above 8 − 1e-6)."""
        return _float32_threshold(float(self.v_th), float(self.theta_eps))


@lru_cache(maxsize=256)
def _float32_threshold(v_th: float, theta_eps: float) -> float:
    """``NeuronParams.threshold32``, computed once per (ν, eps): the numpy scalar costs ~30 µs a call, which
    every forward pass of every layer paid."""
    return float(np.float32(v_th - theta_eps))
