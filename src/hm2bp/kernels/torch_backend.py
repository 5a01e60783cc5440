"""The portable backend: every hot loop in plain torch ops, on any device and dtype.

It is the twin every other backend is tested against, and the base class they inherit what they have no
kernel for from. It holds the one LIF time step of the package (``lif_step``, docs/algorithm.md §1.1), which both the
forward scan here and the surrogate-gradient BPTT of ``functional/surrogate.py`` run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from .backend import OutputRules, SpikeIndex

if TYPE_CHECKING:
    from ..functional.params import NeuronParams


class LIFState(NamedTuple):
    """The state of a layer's LIF neurons between two steps (docs/algorithm.md §1.1)."""

    v: Tensor
    """membrane potential"""
    x: Tensor
    """synaptic current"""
    refractory: Tensor
    """int32 steps left in the refractory period"""


def threshold(p: NeuronParams, dtype: torch.dtype) -> float:
    """The spike test is ``v > θ``: θ = ν − eps, rounded to float32 as the authors' kernels do for float32."""
    return p.threshold32 if dtype == torch.float32 else float(p.v_th) - float(p.theta_eps)


def lif_step(state: LIFState, current: Tensor, p: NeuronParams, fire: Callable[[Tensor], Tensor]
             ) -> tuple[LIFState, Tensor]:
    """One step of docs/algorithm.md §1.1 in its exact order: leak ``v −= v/τ_m``, ``x −= x/τ_s``; ``x += I(t−1)``;
    ``v += x/τ_s``; refractory clamp; ``s = fire(v)``; reset to 0 and ``r = T_ref`` where s > 0.

    ``fire`` maps the potential to 0/1 spikes: a plain ``v > θ`` for the forward scan, a Heaviside with a
    surrogate derivative for BPTT (the reset is not differentiated through). Out-of-place, so autograd can
    run through it."""
    v = state.v - state.v / float(p.tau_m)
    x = state.x - state.x / float(p.tau_s)
    x = x + current
    v = v + x / float(p.tau_s)
    clamped = state.refractory > 0
    v = v.masked_fill(clamped, 0.0)
    refractory = state.refractory - clamped.to(torch.int32)
    spikes = fire(v)
    fired = spikes.detach() > 0
    return LIFState(v.masked_fill(fired, 0.0), x, refractory.masked_fill(fired, int(p.t_ref))), spikes


def lif_run(drive: Tensor, p: NeuronParams, lateral: Tensor | None, fire: Callable[[Tensor], Tensor]) -> Tensor:
    """The time loop: ``lif_step`` for t = 1…T−1 over ``drive`` ``[T, B, *shape]`` (``drive[t]`` enters at step
    t + 1; no spike at t = 0), with ``lateral`` ``[N, N]`` weights on the previous step's own spikes."""
    T = drive.shape[0]
    if T == 0:
        return torch.zeros_like(drive)
    zeros = torch.zeros_like(drive[0])
    state = LIFState(zeros, zeros, torch.zeros(drive.shape[1:], dtype=torch.int32, device=drive.device))
    spikes = [zeros]
    # unbind, not drive[t - 1]: under autograd the backward of per-step indexing builds a [T, B, ...] zero
    # gradient for every step (O(T²) memory traffic); unbind's backward is one stack.
    currents = drive.unbind(0)
    lat_t = None if lateral is None else lateral.t().to(drive.dtype)
    for t in range(1, T):
        current = currents[t - 1]
        if lat_t is not None:
            current = current + (spikes[-1].reshape(drive.shape[1], -1) @ lat_t).reshape(current.shape)
        state, s = lif_step(state, current, p, fire)
        spikes.append(s)
    return torch.stack(spikes)


def lif_scan(drive: Tensor, p: NeuronParams, lateral: Tensor | None = None) -> Tensor:
    """docs/algorithm.md §1.1 forward: 0/1 spikes of ``drive.dtype`` (float32 reproduces the authors' spikes bit for bit)."""
    theta = threshold(p, drive.dtype)
    with torch.no_grad():
        return lif_run(drive, p, lateral, lambda v: (v > theta).to(v.dtype))


# --------------------------------------------------------------------------------------------------
# S-PSP coefficients (functional/psp.py derives them)
# --------------------------------------------------------------------------------------------------


def psp_coefficients(flat: Tensor, p: NeuronParams, dtype: torch.dtype) -> Tensor:
    """C̃ ``[T, M]`` of 0/1 post spikes ``[T, M]`` (the derivation is in ``functional/psp.py``)."""
    T, n_cols = flat.shape
    coef = torch.zeros(2, T, n_cols, dtype=dtype, device=flat.device)
    # (column, time) of every spike, sorted by column then time, so the previous spike is one row up.
    col, t_k = torch.nonzero(flat.t() != 0, as_tuple=True)
    if col.numel() > 0:
        _scatter_spike_coefficients(coef, col, t_k, p)
    return _reverse_filter(coef, _window_cover(col, t_k, T, n_cols, p), p)


def _window_cover(col: Tensor, t_k: Tensor, T: int, n_cols: int, p: NeuronParams) -> Tensor:
    """``[T, n_cols]`` bool: step t lies in some post spike's window [max(1, t_k − window), t_k − T_ref]
    (docs/algorithm.md §2). Elsewhere C̃ is exactly 0; the cancelling coefficients would leave rounding residuals there."""
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


# --------------------------------------------------------------------------------------------------
# Output layer (docs/algorithm.md §3.2 spike insertion, §3.4 lateral factor)
# --------------------------------------------------------------------------------------------------


def label_spike_times(steps: int, desired: int = 35) -> range:
    """docs/algorithm.md §3.2: the steps t = Δ, 2Δ, … < T (Δ = ⌊T/desired⌋) at which a silent label neuron gets spikes;
    empty when T < desired."""
    step = steps // desired
    return range(step, steps, step) if step >= 1 else range(0)


def insert_label_spikes(spikes: Tensor, labels: Tensor, desired: int = 35) -> Tensor:
    """docs/algorithm.md §3.2: a silent label neuron gets spikes at t = Δ, 2Δ, … < T, Δ = ⌊T/desired⌋.

    Args:
        spikes: ``[T, B, N]`` output spikes; labels: ``[B]`` class indices.

    Returns:
        A modified copy of ``spikes`` (the input is left unchanged).
    """
    T, B = spikes.shape[0], spikes.shape[1]
    when = label_spike_times(T, desired)
    out = spikes.clone()
    if not when:
        return out
    batch = torch.arange(B, device=spikes.device)
    silent = spikes[:, batch, labels].sum(0) == 0
    if bool(silent.any()):
        times = torch.arange(when.start, when.stop, when.step, device=spikes.device)
        rows = batch[silent]
        out[times.unsqueeze(1), rows.unsqueeze(0), labels[silent].unsqueeze(0)] = 1
    return out


def lateral_factor(spikes: Tensor, labels: Tensor, p: NeuronParams, strength: float,
                   coefficients: Callable[[Tensor, NeuronParams, torch.dtype], Tensor]) -> Tensor:
    """docs/algorithm.md §3.4: Λ_j = 1 / (1 − w0² Σ_{l≠j} R_jl d_l R_lj d_j) ``[B, N]`` float64, from the spikes ``[T, B, N]``
    before insertion; ``coefficients`` computes C̃ of ``[T, M]`` spikes (``Backend.psp_coefficients``)."""
    s = spikes.to(torch.float64)
    counts = s.sum(0)  # f_j
    T = spikes.shape[0]
    coeffs = coefficients(spikes.reshape(T, -1), p, torch.float64).reshape(spikes.shape)
    # e[b, j, l] = e_{l|j}: only pairs of active neurons are used, so docs/algorithm.md §2's silent-post case is not needed.
    e = torch.einsum("tbj,tbl->bjl", s, coeffs)
    active = counts > 0
    # R[b, j, l] = e_{l|j} / f_j  (j's effect on l relative to j's count), 1 where a count is 0.
    both = active.unsqueeze(2) & active.unsqueeze(1)
    ratio = torch.where(both, e / counts.clamp(min=1).unsqueeze(2), 1.0)
    d = active.to(torch.float64)
    d[torch.arange(len(labels), device=d.device), labels] = 1.0
    d = d / p.v_th
    # loop[b, j] = Σ_{l≠j} R_jl d_l R_lj d_j
    terms = ratio * ratio.transpose(1, 2) * d.unsqueeze(1) * d.unsqueeze(2)
    loop = terms.sum(2) - torch.diagonal(terms, dim1=1, dim2=2)
    return 1.0 / (1.0 - strength**2 * loop)


class TorchBackend:
    """Plain torch ops on any device: the portable path and the mirror of the other backends."""

    name = "torch"

    def lif_scan(self, drive: Tensor, p: NeuronParams, lateral: Tensor | None) -> Tensor:
        return lif_scan(drive, p, lateral)

    def psp_coefficients(self, post_spikes: Tensor, p: NeuronParams, dtype: torch.dtype) -> Tensor:
        return psp_coefficients(post_spikes, p, dtype)

    def output_rules(self, spikes: Tensor, labels: Tensor, p: NeuronParams, strength: float | None,
                     desired: int) -> OutputRules:
        lam = None if strength is None else lateral_factor(spikes, labels, p, strength, self.psp_coefficients)
        used = insert_label_spikes(spikes, labels, desired)
        unstable = lam is not None and bool((~torch.isfinite(lam) | (lam <= 0)).any())
        return OutputRules(used, lam, not torch.equal(used, spikes), unstable)

    def takes_events(self, weight_dtype: torch.dtype) -> bool:
        return False

    def spike_index(self, spikes: Tensor, batch: int, max_density: float) -> SpikeIndex | None:
        return None  # no event path: the dense products serve

    def fc_forward(self, index: SpikeIndex, weight: Tensor, steps: int, batch: int, p: NeuronParams,
                   lateral: Tensor | None, keep: bool, float_out: bool
                   ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        raise NotImplementedError(f"the {self.name} backend has no event path (spike_index returned None)")

    def fc_psp_drive(self, post: Tensor, index: SpikeIndex, weight: Tensor, p: NeuronParams) -> Tensor:
        raise NotImplementedError(f"the {self.name} backend has no event path (spike_index returned None)")

    def fc_backward(self, post: Tensor, index: SpikeIndex, weight: Tensor, delta: Tensor, psp_drive: Tensor,
                    lateral: Tensor | None, p: NeuronParams, below: str | None, silent_psp: float,
                    counts_out: Tensor | None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError(f"the {self.name} backend has no event path (spike_index returned None)")

    def takes_conv_events(self, weight_dtypes: Sequence[torch.dtype]) -> bool:
        return False

    def conv_layer_forward(self, index: SpikeIndex, weight: Tensor | None, geometry: Any, steps: int, batch: int,
                           p: NeuronParams, keep: bool, float_out: bool
                           ) -> tuple[Tensor | None, Tensor, Tensor | None]:
        raise NotImplementedError(f"the {self.name} backend has no conv event path (takes_conv_events is False)")

    def conv_layer_backward(self, post: SpikeIndex, pre: SpikeIndex, weight: Tensor | None, delta: Tensor,
                            geometry: Any, p: NeuronParams, need_below: bool, silent_psp: float
                            ) -> tuple[Tensor | None, Tensor | None]:
        raise NotImplementedError(f"the {self.name} backend has no conv event path (takes_conv_events is False)")
