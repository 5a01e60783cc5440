"""Surrogate-gradient BPTT on exactly the HM2-BP neuron, for comparing learning rules on identical networks.

The forward pass is the LIF scan of spec §1.1 (same operations, so the same spikes as
``neuron.simulate_lif``), written with differentiable torch ops; the spike's Heaviside step gets the
SuperSpike / fast-sigmoid surrogate derivative 1/(1 + β|u|)², u = (v − θ)/ν, and autograd
back-propagates through time. The reset is detached (the usual choice in surrogate-gradient SNNs).
Memory grows with every stored step, which is the point of the comparison with HM2-BP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .params import NeuronParams

SURROGATE_BETA = 10.0


class _HeavisideSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: Tensor, beta: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.beta = beta
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[no-untyped-def,override]
        (u,) = ctx.saved_tensors
        return grad / (1.0 + ctx.beta * u.abs()) ** 2, None


def simulate_lif_bptt(drive: Tensor, p: NeuronParams, lateral: Tensor | None = None,
                      beta: float = SURROGATE_BETA) -> Tensor:
    """The LIF scan of spec §1.1 as a differentiable graph (surrogate gradient at the threshold).

    Args:
        drive: ``[T, B, *shape]`` input currents (``drive[t]`` enters at step t + 1), requires grad.
        lateral: optional ``[N, N]`` recurrent weights on the previous step's spikes.

    Returns:
        ``[T, B, *shape]`` spikes (0/1), differentiable through the surrogate.
    """
    T = drive.shape[0]
    theta = p.threshold32 if drive.dtype == torch.float32 else float(p.v_th) - float(p.theta_eps)
    v = torch.zeros_like(drive[0])
    x = torch.zeros_like(drive[0])
    refractory = torch.zeros(drive.shape[1:], dtype=torch.int32, device=drive.device)
    spikes = [torch.zeros_like(drive[0])]
    # unbind, not drive[t - 1]: the backward of per-step indexing would build a [T, B, ...] zero
    # gradient for every step (O(T²) memory traffic); unbind's backward is one stack.
    currents = drive.unbind(0)
    for t in range(1, T):
        v = v - v / p.tau_m
        x = x - x / p.tau_s
        current = currents[t - 1]
        if lateral is not None:
            prev = spikes[-1].reshape(drive.shape[1], -1)
            current = current + (prev @ lateral.t().to(drive.dtype)).reshape(current.shape)
        x = x + current
        v = v + x / p.tau_s
        clamped = refractory > 0
        v = v.masked_fill(clamped, 0.0)
        refractory = refractory - clamped.to(torch.int32)
        s = _HeavisideSurrogate.apply((v - theta) / p.v_th, beta)
        fired = s.detach() > 0
        refractory = refractory.masked_fill(fired, int(p.t_ref))
        v = v * (1.0 - s.detach())
        spikes.append(s)
    return torch.stack(spikes)
