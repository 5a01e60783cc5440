"""The discrete-time LIF neuron of HM2-BP (spec §1.1): one elementwise scan over time.

Layout: time-major. ``drive`` is ``[T, B, *shape]``; ``drive[t]`` is the synaptic input produced by the
pre-synaptic spikes of step ``t``, which the neuron integrates at step ``t + 1`` (one-step delay).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import cpu
from .params import NeuronParams


def simulate_lif(drive: Tensor, p: NeuronParams, lateral: Tensor | None = None) -> Tensor:
    """Run the LIF neurons of one layer over the whole window.

    The update per step t = 1…T−1 follows spec §1.1 in its exact order and in the dtype of ``drive``
    (float32 reproduces the authors' spikes bit for bit):
    leak ``v -= v/τ_m``, ``x -= x/τ_s``; ``x += I(t−1)``; ``v += x/τ_s``; refractory clamp; strict
    threshold test; reset to 0 and ``r = T_ref`` on a spike. No spike at t = 0.

    Args:
        drive: ``[T, B, *shape]`` feed-forward input currents, ``drive[t] = Σ_j w_ij s_j(t)``.
        p: the layer's neuron constants.
        lateral: optional ``[N, N]`` weights w_lat[i, l] (N = prod(shape)) through which the layer's own
            spikes of the previous step add Σ_l w_lat[i, l]·s_l(t−1) to the current (output lateral
            inhibition, reservoir recurrence).

    Returns:
        ``[T, B, *shape]`` spikes as 0/1 values of ``drive.dtype``.

    On the CPU in float32 the compiled kernel of ``hm2bp.kernels`` runs the same operations; the
    torch loop below is the portable path (GPU, other dtypes, or no C compiler).
    """
    if drive.dtype == torch.float32 and cpu.usable(drive):
        return cpu.lif_scan(drive, float(p.tau_m), float(p.tau_s), int(p.t_ref), p.threshold32, lateral)
    return _simulate_lif_torch(drive, p, lateral)


def _simulate_lif_torch(drive: Tensor, p: NeuronParams, lateral: Tensor | None) -> Tensor:
    T = drive.shape[0]
    out = torch.zeros_like(drive)
    if T == 0:
        return out
    state_shape = drive.shape[1:]
    v = torch.zeros(state_shape, dtype=drive.dtype, device=drive.device)
    x = torch.zeros_like(v)
    refractory = torch.zeros(state_shape, dtype=torch.int32, device=drive.device)
    theta = p.threshold32 if drive.dtype == torch.float32 else float(p.v_th) - float(p.theta_eps)
    tau_m, tau_s, t_ref = float(p.tau_m), float(p.tau_s), int(p.t_ref)
    for t in range(1, T):
        v.sub_(v / tau_m)
        x.sub_(x / tau_s)
        current = drive[t - 1]
        if lateral is not None:
            prev = out[t - 1].reshape(drive.shape[1], -1)
            current = current + (prev @ lateral.t().to(drive.dtype)).reshape(current.shape)
        x.add_(current)
        v.add_(x / tau_s)
        clamped = refractory > 0
        v.masked_fill_(clamped, 0.0)
        refractory.sub_(clamped.to(torch.int32))
        spiked = v > theta
        refractory.masked_fill_(spiked, t_ref)
        v.masked_fill_(spiked, 0.0)
        out[t] = spiked
    return out
