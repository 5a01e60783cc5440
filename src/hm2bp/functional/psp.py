"""Spike-train level PSP (S-PSP) e_{i|j} of docs/algorithm.md §2 without a pair loop (docs/algorithm.md §8.2–§8.3).

For a post neuron i, every post spike k adds a few weighted exponentials to a per-(time, i) coefficient
C_x[t, i] (x ∈ {m, s}: the τ_m and τ_s exponentials). Filtering C backwards in time,

    C̃(t') = Σ_x Σ_{t ≥ t'} exp(−(t − t')/τ_x) · C_x[t],

turns the spec's double sum over (post spike, pre spike) into one sum over pre-spike times:

    e_{i|j} = Σ_t' C̃_i(t') · s_j(t')          (exact; the special constants are handled separately)

(the backends of ``hm2bp.kernels`` build C̃ from this derivation), so every HM2-BP quantity is a contraction of C̃ with the pre-synaptic spikes (see ``hm2bp.py``).
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

import torch
from torch import Tensor

from ..kernels.backend import backend_for
from .params import NeuronParams

SILENT_POST_PSP = 0.1
"""e_{i|j} when the post neuron is silent and the pre neuron fired (docs/algorithm.md §2 special case)."""


def psp_coefficients(post_spikes: Tensor, p: NeuronParams, dtype: torch.dtype = torch.float32) -> Tensor:
    """Backward-filtered S-PSP coefficients C̃ of every post neuron.

    Args:
        post_spikes: ``[T, B, *shape]`` 0/1 spikes of the post-synaptic layer.
        p: that layer's neuron constants (τ_m, τ_s, T_ref, window).
        dtype: dtype of the result (float64 for reference-grade precision).

    Returns:
        ``[T, B, *shape]`` tensor C̃ such that e_{i|j} = Σ_t C̃_i(t)·s_j(t) for every pre neuron j
        of a post neuron i that fired at least once (docs/algorithm.md §2 steps 1–3).
    """
    T = post_spikes.shape[0]
    flat = post_spikes.reshape(T, -1)
    return backend_for(flat).psp_coefficients(flat, p, dtype).reshape(post_spikes.shape)


def psp_matrix(post_spikes: Tensor, pre_spikes: Tensor, p: NeuronParams, dtype: torch.dtype = torch.float64) -> Tensor:
    """The full S-PSP matrix e[b, i, j] (docs/algorithm.md §2), special cases included.

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
