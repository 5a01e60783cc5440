"""The HM2-BP backward rules (docs/algorithm.md §3) as pure functions of spike trains, plus the autograd glue.

Gradient convention between layers: HM2-BP differentiates with respect to firing *counts*
o = Σ_t s(t). A spiking layer returns its spike train ``[T, B, ...]``; in its backward pass the
gradient of that train is read as its time-average (= dL/do when the loss depends on the counts,
which is what ``spikes.sum(0)`` produces), and the error sent to the layer below is returned as the
same value at every time step. A layer stack therefore passes δ exactly as the authors' code does.

``torch.autograd.gradcheck`` is expected to fail on these functions: the HM2-BP rule is not the true
derivative of the (discontinuous) spiking forward pass.

The fast path never builds an S-PSP matrix: every quantity is a contraction of the coefficients C̃
of ``psp.py`` with the pre-synaptic spikes or with the forward drive (docs/algorithm.md §8.3).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import grad as _nn_grad

from ..kernels import torch_backend
from ..kernels.backend import OutputRules, backend_for
from ..kernels.torch_backend import insert_label_spikes, label_spike_times
from . import events as ev
from .params import NeuronParams
from .psp import SILENT_POST_PSP, psp_coefficients

SILENT_POST_RHO = 0.5
"""ρ_il = ∂e_{i|l}/∂o_i stand-in for a silent post neuron (docs/algorithm.md §2, derived quantities)."""


class LayerGrads(NamedTuple):
    """Result of one layer's backward step."""

    weight: Tensor
    """Gradient of the layer's weights (summed over the batch)."""
    delta_below: Tensor | None
    """Count error δ passed to the layer below (before the lower layer's division by its ν)."""


# --------------------------------------------------------------------------------------------------
# Output layer: loss-independent pieces (docs/algorithm.md §3.2 spike insertion, §3.4 lateral factor)
# --------------------------------------------------------------------------------------------------


def lateral_factor(spikes: Tensor, labels: Tensor, p: NeuronParams, strength: float = 1.0) -> Tensor:
    """docs/algorithm.md §3.4: Λ_j = 1 / (1 − w0² Σ_{l≠j} R_jl d_l R_lj d_j), from the spikes before insertion.

    Args:
        spikes: ``[T, B, N]`` output spikes before the spike insertion of §3.2.
        labels: ``[B]``. p: the output layer's constants. strength: w0 (1 in all configs).

    Returns:
        ``[B, N]`` float64 factors. Non-finite values and loop gains ≥ 1 are returned as they are
        (the authors do not guard them); the trainer skips an update whose gradients are not finite
        (``train/objective.py``) and names the cause.
    """
    return torch_backend.lateral_factor(spikes, labels, p, strength, backend_for(spikes).psp_coefficients)


def output_rules(spikes: Tensor, labels: Tensor, p: NeuronParams, strength: float | None, desired: int = 35
                 ) -> OutputRules:
    """docs/algorithm.md §3.2 and §3.4 for a batch: ``insert_label_spikes`` and, when ``strength`` (w0) is not None,
    ``lateral_factor`` of the spikes before insertion. The backend decides how (on the CPU one compiled pass
    does both: one call instead of ~90 small tensor operations per training step)."""
    return backend_for(spikes, labels).output_rules(spikes, labels, p, strength, desired)


# --------------------------------------------------------------------------------------------------
# Per-layer backward rules (docs/algorithm.md §3.3, §3.5)
# --------------------------------------------------------------------------------------------------


def _side_effect(psp_drive: Tensor, counts: Tensor, weight_sum: Tensor, v_th: float) -> Tensor:
    """σ_i = (1/ν) Σ_l w_il ρ_il with ρ = e/o_i (o_i > 0) or 0.5 (silent post).

    ``psp_drive`` is Σ_l w_il e_il = Σ_t C̃_i(t)·(W s(t))_i: the forward drive, no extra GEMM.
    """
    sigma_active = psp_drive / (v_th * counts.clamp(min=1))
    sigma_silent = SILENT_POST_RHO * weight_sum / v_th
    return torch.where(counts > 0, sigma_active, sigma_silent)


def linear_backward(
    delta: Tensor,
    in_spikes: Tensor | None,
    out_spikes: Tensor,
    weight: Tensor,
    drive: Tensor | None,
    p: NeuronParams,
    *,
    lateral: Tensor | None = None,
    effect_ratio: bool = True,
    need_delta_below: bool = True,
    dtype: torch.dtype = torch.float32,
    events: ev.SpikeEvents | None = None,
    psp_drive: Tensor | None = None,
    counts_out: Tensor | None = None,
) -> LayerGrads:
    """HM2-BP backward step of a fully connected spiking layer (docs/algorithm.md §3.3).

    g_ij = Σ_b δ̂_bi · e_{i|j} · (1 + σ_bi) · Λ_bi  and  δ_below_bj = Σ_i δ̂_bi · w_ij · r_bij,
    with δ̂ = δ/ν, r = e/o_j when o_i, o_j > 0 (else 1), or r ≡ 1 when ``effect_ratio`` is off.

    Args:
        delta: ``[B, N_out]`` count error δ of this layer.
        in_spikes: ``[T, B, N_in]`` input spikes (may be None when ``events`` is given).
        out_spikes: ``[T, B, N_out]`` output spikes (for the output layer: after spike insertion).
        weight: ``[N_out, N_in]`` weights before this step's update.
        drive: ``[T, B, N_out]`` forward drive W·s_in(t) (may be None when ``events`` or ``psp_drive``
            is given).
        lateral: ``[B, N_out]`` factor Λ or None.
        dtype: compute dtype of the S-PSP contractions.
        events: the input spikes indexed by ``events.spike_events``: every product then visits only the
            spikes, C̃ is rebuilt per sample inside the kernels, and neither the dense input nor the
            drive is needed.
        psp_drive: ``[B, N_out]`` Σ_l w_il e_{i|l} = Σ_t C̃_i(t)·(W s(t))_i when already known (the
            event forward computes it for ``out_spikes``).
        counts_out: ``[B, N_out]`` spike counts of ``out_spikes`` when already known.

    Returns:
        LayerGrads(weight ``[N_out, N_in]``, delta_below ``[B, N_in]`` or None).
    """
    w = weight.to(dtype)
    if events is not None:  # one compiled pass with the same rules as the torch code below
        if psp_drive is None:
            psp_drive = ev.psp_drive(out_spikes, events, w, p)
        below = None if not need_delta_below else "effect_ratio" if effect_ratio else "plain"
        return LayerGrads(*ev.linear_backward(out_spikes, events, w, delta, psp_drive, lateral, p, below, counts_out))
    counts_out = (out_spikes.sum(0) if counts_out is None else counts_out).to(dtype)
    delta_hat = delta.to(dtype) / p.v_th
    assert in_spikes is not None
    s_in = in_spikes.to(dtype)
    counts_in = s_in.sum(0)
    coeffs = psp_coefficients(out_spikes, p, dtype)
    if psp_drive is None:
        assert drive is not None
        psp_drive = (coeffs * drive.to(dtype)).sum(0)
    sigma = _side_effect(psp_drive.to(dtype), counts_out, w.sum(1), p.v_th)
    factor = delta_hat * (1.0 + sigma)
    if lateral is not None:
        factor = factor * lateral.to(dtype)
    want_through = need_delta_below and effect_ratio
    silent_out = counts_out == 0
    T, B = s_in.shape[:2]
    grad_w = (coeffs * factor).reshape(T * B, -1).t() @ s_in.reshape(T * B, -1)
    through_psp = (((coeffs * delta_hat) @ w) * s_in).sum(0) if want_through else None
    # e = 0.1 for a silent post neuron and an active pre neuron: only the rows of silent neurons.
    rows = torch.nonzero(silent_out.any(0)).flatten()
    if rows.numel() > 0:
        silent_factor = (factor * silent_out)[:, rows]
        grad_w.index_add_(0, rows, SILENT_POST_PSP * silent_factor.t() @ (counts_in > 0).to(dtype))

    delta_below = None
    if need_delta_below:
        if effect_ratio:
            # Σ_{i: o_i>0} δ̂_i w_ij e_ij / o_j  +  Σ_{i: o_i=0} δ̂_i w_ij   (o_j > 0);  Σ_i δ̂_i w_ij (o_j = 0)
            assert through_psp is not None
            from_silent = (delta_hat * silent_out) @ w
            delta_below = torch.where(counts_in > 0, through_psp / counts_in.clamp(min=1) + from_silent, delta_hat @ w)
        else:
            delta_below = delta_hat @ w
    return LayerGrads(grad_w, delta_below)


def conv_backward(
    delta: Tensor,
    in_spikes: Tensor,
    out_spikes: Tensor,
    weight: Tensor,
    drive: Tensor,
    p: NeuronParams,
    *,
    need_delta_below: bool = True,
    dtype: torch.dtype = torch.float32,
) -> LayerGrads:
    """HM2-BP backward step of a spiking conv layer (valid, stride 1; docs/algorithm.md §3.5).

    The per-position rule of the FC layer with shared weights: the weight gradient is the
    ``conv2d`` weight-gradient of the pre spikes against δ̂(1+σ)·C̃, and δ_below is a transposed
    convolution of δ̂·C̃ (effect ratio) masked by the pre spikes.

    Args:
        delta: ``[B, K, Ho, Wo]``; in_spikes: ``[T, B, C, H, W]``; out_spikes: ``[T, B, K, Ho, Wo]``;
        weight: ``[K, C, k, k]``; drive: ``[T, B, K, Ho, Wo]`` forward conv drive.

    Returns:
        LayerGrads(weight ``[K, C, k, k]``, delta_below ``[B, C, H, W]`` or None).
    """
    T, B = in_spikes.shape[0], in_spikes.shape[1]
    w = weight.to(dtype)
    s_in = in_spikes.to(dtype)
    counts_out = out_spikes.sum(0).to(dtype)
    counts_in = s_in.sum(0)
    delta_hat = delta.to(dtype) / p.v_th
    coeffs = psp_coefficients(out_spikes, p, dtype)
    kernel_sum = w.sum((1, 2, 3)).view(1, -1, 1, 1)
    sigma = _side_effect((coeffs * drive.to(dtype)).sum(0), counts_out, kernel_sum, p.v_th)
    factor = delta_hat * (1.0 + sigma)
    silent_out = counts_out == 0

    flat_in = s_in.reshape(T * B, *s_in.shape[2:])
    grad_w = _nn_grad.conv2d_weight(  # type: ignore[no-untyped-call]
        flat_in, w.shape, (coeffs * factor).reshape(T * B, *coeffs.shape[2:]))
    grad_w += SILENT_POST_PSP * _nn_grad.conv2d_weight(  # type: ignore[no-untyped-call]
        (counts_in > 0).to(dtype), w.shape, factor * silent_out)

    delta_below = None
    if need_delta_below:
        spread = (coeffs * delta_hat).reshape(T * B, *coeffs.shape[2:])
        through_psp = (F.conv_transpose2d(spread, w).reshape(s_in.shape) * s_in).sum(0) / counts_in.clamp(min=1)
        from_silent = F.conv_transpose2d(delta_hat * silent_out, w)
        delta_below = torch.where(counts_in > 0, through_psp + from_silent, F.conv_transpose2d(delta_hat, w))
    return LayerGrads(grad_w, delta_below)


def pool_backward(
    delta: Tensor, in_spikes: Tensor, out_spikes: Tensor, pool: int, p: NeuronParams, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Error through a spiking pooling layer (docs/algorithm.md §3.5): δ_conv(x') = δ_pool(x)/p² · r_{x|x'}.

    No division by the pool's own ν and no side-effect term (as the authors' code); r = e/o_in when
    both counts are > 0, else 1. Windows do not overlap, so each input has at most one pool neuron.

    Args:
        delta: ``[B, C, Hp, Wp]``; in_spikes: ``[T, B, C, H, W]``; out_spikes: ``[T, B, C, Hp, Wp]``.

    Returns:
        ``[B, C, H, W]``.
    """
    H, W = in_spikes.shape[-2:]
    s_in = in_spikes.to(dtype)
    coeffs = psp_coefficients(out_spikes, p, dtype)

    def up(x: Tensor) -> Tensor:
        return x.repeat_interleave(pool, -2).repeat_interleave(pool, -1)[..., :H, :W]

    e = (up(coeffs) * s_in).sum(0)
    counts_in = s_in.sum(0)
    counts_out = up(out_spikes.sum(0).to(dtype))
    both = (counts_in > 0) & (counts_out > 0)
    ratio = torch.where(both, e / counts_in.clamp(min=1), torch.ones_like(e))
    return up(delta.to(dtype)) / pool**2 * ratio


__all__ = [
    "LayerGrads", "OutputRules", "conv_backward", "insert_label_spikes", "label_spike_times", "lateral_factor",
    "linear_backward", "output_rules", "pool_backward",
]
