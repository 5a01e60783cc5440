"""Surrogate-gradient BPTT on exactly the HM2-BP neuron, for comparing learning rules on identical networks.

The forward pass is the LIF scan of docs/algorithm.md §1.1: the same time loop and step as the torch backend
(``kernels/torch_backend.lif_run``, out-of-place ops, so the same spikes as ``neuron.simulate_lif``); the spike's Heaviside step gets the
SuperSpike / fast-sigmoid surrogate derivative 1/(1 + β|u|)², u = (v − θ)/ν, and autograd
back-propagates through time. The reset is detached (the usual choice in surrogate-gradient SNNs).
Memory grows with every stored step, which is the point of the comparison with HM2-BP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..kernels import torch_backend
from .params import NeuronParams

SURROGATE_BETA = 10.0


class _HeavisideSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: Tensor, beta: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.beta = beta
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:
        (u,) = ctx.saved_tensors
        return grad / (1.0 + ctx.beta * u.abs()) ** 2, None


def simulate_lif_bptt(drive: Tensor, p: NeuronParams, lateral: Tensor | None = None,
                      beta: float = SURROGATE_BETA) -> Tensor:
    """The LIF scan of docs/algorithm.md §1.1 as a differentiable graph (surrogate gradient at the threshold).

    Args:
        drive: ``[T, B, *shape]`` input currents (``drive[t]`` enters at step t + 1), requires grad.
        lateral: optional ``[N, N]`` recurrent weights on the previous step's spikes.

    Returns:
        ``[T, B, *shape]`` spikes (0/1), differentiable through the surrogate.
    """
    theta = torch_backend.threshold(p, drive.dtype)
    v_th = float(p.v_th)
    return torch_backend.lif_run(drive, p, lateral, lambda v: _HeavisideSurrogate.apply((v - theta) / v_th, beta))  # type: ignore[no-untyped-call]
