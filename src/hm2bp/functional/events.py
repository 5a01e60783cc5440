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
    """The spikes of a ``[T, B, N]`` train as CSR (by row r = t·B + b) and CSC (by neuron) indices."""

    row_ptr: Tensor
    cols: Tensor
    col_ptr: Tensor
    rows: Tensor
    batch: int


def spike_events(spikes: Tensor) -> SpikeEvents | None:
    """Index the spikes for the event-driven kernels, or None when the dense path is the better choice."""
    if spikes.device.type != "cpu" or cpu.library() is None or spikes.dim() != 3:
        return None
    T, B, N = spikes.shape
    flat = spikes.reshape(T * B, N)
    nz = torch.nonzero(flat)
    if nz.shape[0] > MAX_EVENT_DENSITY * flat.numel():
        return None
    rows, cols = nz[:, 0].contiguous(), nz[:, 1].contiguous()
    row_ptr = torch.zeros(T * B + 1, dtype=torch.int64)
    row_ptr[1:] = torch.bincount(rows, minlength=T * B).cumsum(0)
    order = torch.argsort(cols, stable=True)
    col_ptr = torch.zeros(N + 1, dtype=torch.int64)
    col_ptr[1:] = torch.bincount(cols, minlength=N).cumsum(0)
    return SpikeEvents(row_ptr, cols, col_ptr, rows[order].contiguous(), B)


def drive(spikes: Tensor, weight: Tensor, events: SpikeEvents | None) -> Tensor:
    """W·s(t) for every step: ``[T, B, N_in]`` × ``[N_out, N_in]`` → ``[T, B, N_out]``."""
    if events is None:
        return spikes @ weight.t()
    T, B = spikes.shape[:2]
    out = cpu.event_drive(events.row_ptr, events.cols, weight.t(), T * B)
    return out.reshape(T, B, -1)


def weight_gradient(spikes: Tensor, coeffs: Tensor, events: SpikeEvents | None) -> Tensor:
    """Σ_{t,b} coeffs[t, b]ᵀ ⊗ s[t, b]: ``[T, B, N_out]``, ``[T, B, N_in]`` → ``[N_out, N_in]``."""
    if events is None:
        T, B = spikes.shape[:2]
        return coeffs.reshape(T * B, -1).t() @ spikes.to(coeffs.dtype).reshape(T * B, -1)
    return cpu.event_outer(events.row_ptr, events.cols, coeffs.reshape(-1, coeffs.shape[-1]), spikes.shape[-1]).t()


def spike_weighted_error(spikes: Tensor, a: Tensor, weight: Tensor, events: SpikeEvents | None) -> Tensor:
    """Σ_t s[t, b, j] · (a[t, b] · W)_j: ``[T, B, N_out]`` → ``[B, N_in]``."""
    if events is None:
        return ((a @ weight.to(a.dtype)) * spikes.to(a.dtype)).sum(0)
    return cpu.event_dot(events.col_ptr, events.rows, a.reshape(-1, a.shape[-1]), weight.t(), events.batch)
