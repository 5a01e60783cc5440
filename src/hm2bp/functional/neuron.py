"""The discrete-time LIF neuron of HM2-BP (spec §1.1): one elementwise scan over time.

Layout: time-major. ``drive`` is ``[T, B, *shape]``; ``drive[t]`` is the synaptic input produced by the
pre-synaptic spikes of step ``t``, which the neuron integrates at step ``t + 1`` (one-step delay).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .params import NeuronParams

LateralFn = Callable[[Tensor], Tensor]


def simulate_lif(drive: Tensor, p: NeuronParams, lateral: LateralFn | None = None) -> Tensor:
    """Run the LIF neurons of one layer over the whole window.

    The update per step t = 1…T−1 follows spec §1.1 in its exact order and in the dtype of ``drive``
    (float32 reproduces the authors' spikes bit for bit):
    leak ``v -= v/τ_m``, ``x -= x/τ_s``; ``x += I(t−1)``; ``v += x/τ_s``; refractory clamp; strict
    threshold test; reset to 0 and ``r = T_ref`` on a spike. No spike at t = 0.

    Args:
        drive: ``[T, B, *shape]`` feed-forward input currents, ``drive[t] = Σ_j w_ij s_j(t)``.
        p: the layer's neuron constants.
        lateral: optional function mapping the layer's spikes of the previous step ``[B, *shape]``
            (as ``drive.dtype``) to an extra current (lateral inhibition, reservoir recurrence).

    Returns:
        ``[T, B, *shape]`` spikes as 0/1 values of ``drive.dtype``.
    """
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
            current = current + lateral(out[t - 1])
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
