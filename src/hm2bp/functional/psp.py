"""Spike-train level PSP (S-PSP) e_{i|j} of spec §2 without a pair loop (design.md §2–3).

For a post neuron i, every post spike k adds a few weighted exponentials to a per-(time, i) coefficient
C_x[t, i] (x ∈ {m, s}: the τ_m and τ_s exponentials). Filtering C backwards in time,

    C̃(t') = Σ_x Σ_{t ≥ t'} exp(−(t − t')/τ_x) · C_x[t],

turns the spec's double sum over (post spike, pre spike) into one sum over pre-spike times:

    e_{i|j} = Σ_t' C̃_i(t') · s_j(t')          (exact; the special constants are handled separately)

so every HM2-BP quantity is a contraction of C̃ with the pre-synaptic spikes (see ``hm2bp.py``).
The derivation of the coefficients, for post spike k at t_k (previous post spike t_{k−1}):

- a = t_k − T_ref is the latest pre spike that counts, lo = max(1, t_k − 4τ_m) the earliest.
- case A, pre spikes in [A0, a] with A0 = lo (k = 1) or max(t_{k−1}, lo): kernel ε(t_k − T_ref − t_j)
  = c·(e^{−(a−t_j)/τ_m} − e^{−(a−t_j)/τ_s}), c = 1/(1 − τ_s/τ_m).
- case B (k ≥ 2), pre spikes in [lo, min(t_{k−1} − 1, a)]: the reset branch
  e^{−(t_{k−1} − t_j)/τ_s} · ε(s_k), s_k = t_k − t_{k−1} − T_ref.

A sum Σ_{t_j ∈ [L, U]} e^{−(U' − t_j)/τ} becomes a coefficient e^{−(U'−U)/τ} at U minus
e^{−(U'−L+1)/τ} at L − 1, because the backward filter spreads a coefficient at U over all t' ≤ U.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..kernels import cpu
from .params import NeuronParams

SILENT_POST_PSP = 0.1
"""e_{i|j} when the post neuron is silent and the pre neuron fired (spec §2 special case)."""


def psp_coefficients(post_spikes: Tensor, p: NeuronParams, dtype: torch.dtype = torch.float32) -> Tensor:
    """Backward-filtered S-PSP coefficients C̃ of every post neuron.

    Args:
        post_spikes: ``[T, B, *shape]`` 0/1 spikes of the post-synaptic layer.
        p: that layer's neuron constants (τ_m, τ_s, T_ref, window).
        dtype: dtype of the result (float64 for reference-grade precision).

    Returns:
        ``[T, B, *shape]`` tensor C̃ such that e_{i|j} = Σ_t C̃_i(t)·s_j(t) for every pre neuron j
        of a post neuron i that fired at least once (spec §2 steps 1–3).
    """
    T = post_spikes.shape[0]
    flat = post_spikes.reshape(T, -1)
    if dtype in (torch.float32, torch.float64) and cpu.usable(flat):
        coeffs = cpu.psp_coefficients(flat, float(p.tau_m), float(p.tau_s), int(p.t_ref), p.psp_window, dtype)
        return coeffs.reshape(post_spikes.shape)
    n_cols = flat.shape[1]
    device = post_spikes.device
    coef = torch.zeros(2, T, n_cols, dtype=dtype, device=device)
    # (column, time) of every spike, sorted by column then time, so the previous spike is one row up.
    col, t_k = torch.nonzero(flat.t() != 0, as_tuple=True)
    if col.numel() > 0:
        _scatter_spike_coefficients(coef, col, t_k, p)
    return _reverse_filter(coef, _window_cover(col, t_k, T, n_cols, p), p).reshape(post_spikes.shape)


def _window_cover(col: Tensor, t_k: Tensor, T: int, n_cols: int, p: NeuronParams) -> Tensor:
    """``[T, n_cols]`` bool: step t lies in some post spike's window [max(1, t_k − window), t_k − T_ref]
    (spec §2). Elsewhere C̃ is exactly 0; the cancelling coefficients would leave rounding residuals there."""
    lo = torch.clamp(t_k - p.psp_window, min=1)
    hi = t_k - int(p.t_ref)
    ok = lo <= hi
    edges = torch.zeros(T + 1, n_cols, dtype=torch.int32, device=col.device)
    ones = torch.ones(int(ok.sum()), dtype=torch.int32, device=col.device)
    edges.index_put_((lo[ok], col[ok]), ones, accumulate=True)
    edges.index_put_((hi[ok] + 1, col[ok]), -ones, accumulate=True)
    return edges[:T].cumsum(0) > 0


def _scatter_spike_coefficients(coef: Tensor, col: Tensor, t_k: Tensor, p: NeuronParams) -> None:
    dtype = coef.dtype
    tau_m, tau_s, t_ref = float(p.tau_m), float(p.tau_s), int(p.t_ref)
    c = 1.0 / (1.0 - tau_s / tau_m)
    same_col = torch.zeros_like(col, dtype=torch.bool)
    same_col[1:] = col[1:] == col[:-1]
    prev = torch.full_like(t_k, -1)
    prev[1:] = t_k[:-1]
    prev = torch.where(same_col, prev, torch.full_like(prev, -1))
    has_prev = prev >= 0

    a = t_k - t_ref
    lo = torch.clamp(t_k - p.psp_window, min=1)
    a0 = torch.where(has_prev, torch.maximum(prev, lo), lo)

    # Case A: Σ_{t_j∈[A0,a]} ±c·exp(−(a − t_j)/τ_x): +c at a, −c·exp(−(a−A0+1)/τ_x) at A0−1.
    in_a = a >= a0
    ca, aa, a0a = col[in_a], a[in_a], a0[in_a]
    span = (aa - a0a + 1).to(dtype)
    for x, (tau, sign) in enumerate(((tau_m, c), (tau_s, -c))):
        coef[x].index_put_((aa, ca), torch.full_like(span, sign), accumulate=True)
        coef[x].index_put_((a0a - 1, ca), -sign * torch.exp(-span / tau), accumulate=True)

    # Case B: pre spikes before the previous post spike, seen through the reset (τ_s branch only).
    b_hi = torch.minimum(prev - 1, a)
    in_b = has_prev & (b_hi >= lo)
    cb, tb, pb, hb, lb = col[in_b], t_k[in_b], prev[in_b], b_hi[in_b], lo[in_b]
    s_k = (tb - pb - t_ref).to(dtype)
    eps_s = c * (torch.exp(-s_k / tau_m) - torch.exp(-s_k / tau_s))
    coef[1].index_put_((hb, cb), eps_s * torch.exp(-(pb - hb).to(dtype) / tau_s), accumulate=True)
    coef[1].index_put_((lb - 1, cb), -eps_s * torch.exp(-(pb - lb + 1).to(dtype) / tau_s), accumulate=True)


def _reverse_filter(coef: Tensor, cover: Tensor, p: NeuronParams) -> Tensor:
    """C̃(t) = Σ_x Σ_{t'≥t} d_x^{t'−t} C_x[t'] with d_x = exp(−1/τ_x), one backward scan; the accumulators
    are reset to 0 at the steps outside every window (``cover`` false), where the exact value is 0."""
    T = coef.shape[1]
    decay = torch.tensor(
        [math.exp(-1.0 / p.tau_m), math.exp(-1.0 / p.tau_s)], dtype=coef.dtype, device=coef.device
    ).unsqueeze(1)
    acc = torch.zeros_like(coef[:, 0])
    zero = torch.zeros((), dtype=coef.dtype, device=coef.device)
    out = torch.empty(T, coef.shape[2], dtype=coef.dtype, device=coef.device)
    for t in range(T - 1, -1, -1):
        acc = torch.where(cover[t], acc * decay + coef[:, t], zero)
        out[t] = acc[0] + acc[1]
    return out


def psp_matrix(post_spikes: Tensor, pre_spikes: Tensor, p: NeuronParams, dtype: torch.dtype = torch.float64) -> Tensor:
    """The full S-PSP matrix e[b, i, j] (spec §2), special cases included.

    Meant for small layers (the output layer's lateral factor) and for inspection; the training path
    never builds this (batch × N_post × N_pre) tensor.

    Args:
        post_spikes: ``[T, B, N_post]``; pre_spikes: ``[T, B, N_pre]``.

    Returns:
        ``[B, N_post, N_pre]``.
    """
    coeffs = psp_coefficients(post_spikes, p, dtype)
    pre = pre_spikes.to(dtype)
    e = torch.einsum("tbi,tbj->bij", coeffs, pre)
    post_silent = post_spikes.sum(0) == 0
    pre_active = pre_spikes.sum(0) > 0
    special = (post_silent.unsqueeze(2) & pre_active.unsqueeze(1)).to(dtype) * SILENT_POST_PSP
    return torch.where(post_silent.unsqueeze(2), special, e)
