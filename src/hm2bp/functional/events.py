"""Products with binary spike trains, event-driven where the spikes are sparse (design.md §1, §3).

A fully connected layer needs three products with its input spikes S ``[T·B, N_in]``: the forward drive
W·s(t), the weight gradient Σ_t C̃(t)ᵀ s(t) and the error term Σ_t s(t) ⊙ (A(t)·W). Each costs
(number of spikes) × N_out when only the spikes are visited, against T·B·N_in·N_out for a dense GEMM;
MNIST inputs fire in 1–3 % of the (step, pixel) slots. On the CPU the compiled kernels visit the
spikes; elsewhere (GPU, no compiler, dense spikes) the same products are dense matmuls.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor

from ..kernels import cpu

MAX_EVENT_DENSITY = float(os.environ.get("HM2BP_MAX_EVENT_DENSITY", "0.15"))
"""Above this fraction of 1s the dense GEMM is cheaper than visiting the spikes."""


class SpikeEvents(NamedTuple):
    """The spikes of a ``[T, B, N]`` train as a CSR index over rows r = t·B + b."""

    row_ptr: Tensor
    cols: Tensor
    batch: int
    counts: Tensor
    """``[B, N]`` spike counts per sample and neuron."""


def spike_events(spikes: Tensor) -> SpikeEvents | None:
    """Index the spikes for the event-driven kernels, or None when the dense path is the better choice."""
    if spikes.device.type != "cpu" or cpu.library() is None or spikes.dim() != 3:
        return None
    T, B, N = spikes.shape
    index = cpu.spike_index(spikes.reshape(T * B, N), B, max_density=MAX_EVENT_DENSITY)
    return None if index is None else SpikeEvents(index[0], index[1], B, index[2])


def drive(spikes: Tensor, weight: Tensor, events: SpikeEvents | None) -> Tensor:
    """W·s(t) for every step: ``[T, B, N_in]`` × ``[N_out, N_in]`` → ``[T, B, N_out]``."""
    if events is None:
        return spikes @ weight.t()
    T, B = spikes.shape[:2]
    out = cpu.event_drive(events.row_ptr, events.cols, weight.t(), T * B)
    return out.reshape(T, B, -1)


def weight_gradient(spikes: Tensor | None, coeffs: Tensor, scale: Tensor, events: SpikeEvents | None) -> Tensor:
    """Σ_{t,b} (coeffs[t, b] ⊙ scale[b])ᵀ ⊗ s[t, b]: ``[T, B, N_out]``, ``[B, N_out]`` → ``[N_out, N_in]``."""
    if events is None:
        assert spikes is not None
        T, B = spikes.shape[:2]
        return (coeffs * scale).reshape(T * B, -1).t() @ spikes.to(coeffs.dtype).reshape(T * B, -1)
    n_in = events.counts.shape[1]
    flat = coeffs.reshape(-1, coeffs.shape[-1])
    return cpu.event_outer_scaled(events.row_ptr, events.cols, flat, scale, n_in).t()


def spike_weighted_error(spikes: Tensor | None, coeffs: Tensor, scale: Tensor, weight: Tensor,
                         events: SpikeEvents | None) -> Tensor:
    """Σ_t s[t, b, j] · ((coeffs[t, b] ⊙ scale[b]) · W)_j: ``[T, B, N_out]`` → ``[B, N_in]``."""
    if events is None:
        assert spikes is not None
        return (((coeffs * scale) @ weight.to(coeffs.dtype)) * spikes.to(coeffs.dtype)).sum(0)
    flat = coeffs.reshape(-1, coeffs.shape[-1])
    return cpu.event_dot_scaled(events.row_ptr, events.cols, flat, scale, weight.t(), coeffs.shape[0])


def drive_weighted_sum(coeffs: Tensor, drive: Tensor | None, weight: Tensor, events: SpikeEvents | None) -> Tensor:
    """Σ_t coeffs[t, b, i] · (W s(t))_{b,i} = Σ_l w_il e_il: from the saved drive, or rebuilt from the spikes."""
    if events is None:
        assert drive is not None
        return (coeffs * drive.to(coeffs.dtype)).sum(0)
    T, B = coeffs.shape[:2]
    return cpu.event_sigma(events.row_ptr, events.cols, coeffs.reshape(T * B, -1), weight.t(), T, B)
