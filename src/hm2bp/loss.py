"""HM2-BP losses on output firing counts (docs/algorithm.md §3.1, §3.6) and the weight regulariser (§4.1).

They are ordinary differentiable functions: ``loss.backward()`` produces exactly the output error δ of
the authors' code as dL/d(counts), and the spiking layers carry it down with the HM2-BP rule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional.hm2bp import label_spike_times
from .nn.layers import SpikingConv2d, SpikingLinear


def target_counts(labels: Tensor, n_classes: int, desired: float = 35.0, undesired: float = 5.0) -> Tensor:
    """Target counts y (docs/algorithm.md §3.1): ``desired`` for the label neuron, ``undesired`` for the others.

    Args:
        labels: ``[B]`` int64 class indices. n_classes: number of output neurons.

    Returns:
        float32 ``[B, n_classes]``.
    """
    onehot = F.one_hot(labels, n_classes).to(torch.float32)
    return undesired + (desired - undesired) * onehot


def counts_as_logged(counts: Tensor, labels: Tensor, steps: int, desired: int = 35) -> Tensor:
    """The output counts the authors' logged cost reads (docs/algorithm.md §3.1): those after the spike insertion of
    §3.2, which runs before the cost is read, so a label neuron that stayed silent counts the spikes it was
    given (36 at T = 400) instead of 0. Training uses the raw counts (δ comes first); only the logged
    cost differs.

    Args:
        counts: ``[B, N]`` raw output counts; labels: ``[B]``; steps: the time window T; desired: DESIRED_LEVEL.

    Returns:
        a copy of ``counts`` with the silent label entries replaced.
    """
    inserted = len(label_spike_times(steps, int(desired)))
    out = counts.clone()
    if not inserted or counts.shape[0] == 0:
        return out
    rows = torch.arange(counts.shape[0], device=counts.device)
    silent = out[rows, labels] == 0
    out[rows[silent], labels[silent]] = float(inserted)
    return out


def rate_loss(
    counts: Tensor,
    labels: Tensor,
    *,
    desired: float = 35.0,
    undesired: float = 5.0,
    margin: float = 5.0,
    sample_weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Dead-zone rate loss L = Σ_i ½ β_n (o_i − y_i)² · [|o_i − y_i| > M]  (docs/algorithm.md §3.1; paper Eq. 1).

    Its gradient is the authors' output error δ_i = β_n (o_i − y_i) outside the dead zone, 0 inside.
    (The authors' logged cost is 2·L/β_n: no ½, no boost weight.)

    Args:
        counts: ``[B, N]`` output firing counts (``spikes.sum(0)``); labels: ``[B]``.
        sample_weight: ``[B]`` boost weights β_n (docs/algorithm.md §4.4), 1 when omitted.
        reduction: "mean" over the batch (mini-batch mode = mean of per-sample rules), "sum" or "none".
    """
    err = counts - target_counts(labels, counts.shape[1], desired, undesired).to(counts.dtype)
    per_neuron = 0.5 * err.square() * (err.abs() > margin).to(counts.dtype)
    per_sample = per_neuron.sum(1)
    if sample_weight is not None:
        per_sample = per_sample * sample_weight.to(counts.dtype)
    return _reduce(per_sample, reduction)


def softmax_loss(counts: Tensor, labels: Tensor, *, sample_weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy on raw counts (docs/algorithm.md §3.6): L = −β_n log softmax(o)_label, δ = β_n (softmax(o) − onehot).

    No temperature and no margin; the output layer's spike insertion still uses its ``desired`` level.

    Args:
        counts: ``[B, N]`` output firing counts; labels: ``[B]``.
        sample_weight: ``[B]`` boost weights β_n (docs/algorithm.md §4.4), 1 when omitted.
        reduction: "mean" over the batch, "sum" or "none" (``[B]``).

    Returns:
        a scalar (``[B]`` with reduction "none").
    """
    per_sample = F.cross_entropy(counts, labels, reduction="none")
    if sample_weight is not None:
        per_sample = per_sample * sample_weight.to(counts.dtype)
    return _reduce(per_sample, reduction)


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class _NormPenalty(torch.autograd.Function):
    """R(W) = λ·(N_in·L/2)·Σ_i [exp(β(S_i − 1)) − exp(−β)] with its gradient λβ(w/L)exp(β(S_i − 1)) in one pass."""

    @staticmethod
    def forward(ctx, w: Tensor, lam: float, beta: float, limit: float) -> Tensor:
        rows = w.reshape(w.shape[0], -1)
        n_in = rows.shape[1]
        s = rows.square().sum(1) / (n_in * limit * limit)  # S_i
        growth = torch.exp(beta * (s - 1.0))  # exp(β(S_i − 1)), the gradient's factor
        ctx.save_for_backward(w, growth)
        ctx.scale = lam * beta / limit
        # exp(β(S−1)) − exp(−β) = exp(−β)·expm1(βS): the value without its constant, accurate near S = 0
        return lam * (n_in * limit / 2.0) * math.exp(-beta) * torch.expm1(beta * s).sum()

    @staticmethod
    def backward(ctx, grad: Tensor):
        w, growth = ctx.saved_tensors
        coef = (grad * ctx.scale * growth).reshape(-1, *([1] * (w.dim() - 1)))
        return w * coef, None, None, None


def weight_regularizer(model: nn.Module, lam: float, beta: float, limit: float = 8.0) -> Tensor:
    """Soft weight-norm penalty whose gradient is the authors' λ·β·(w/L)·exp(β(S_i − 1)) (docs/algorithm.md §4.1).

    R = Σ_layers Σ_i λ·(N_in·L/2)·[exp(β(S_i − 1)) − exp(−β)], S_i = (1/N_in)·Σ_j (w_ij/L)², over each FC
    neuron's incoming weights and each conv kernel's C·k·k weights. Differentiating R gives the term above;
    it is computed in one pass over the weights (``_NormPenalty``). The constant −exp(−β) (R = 0 at zero
    weights) changes no gradient; without it the paper's λ·N_in·L/2 per neuron (~2.4e7 for 784-800-10)
    would swamp the data loss in a printed total.

    Args:
        model: any module; every ``SpikingLinear`` and ``SpikingConv2d`` weight that requires a gradient
            is penalised.
        lam, beta, limit: λ (LAMBDA_REG, 0 = off), β (BETA_REG) and L (WEIGHT_LIMIT).

    Returns:
        a scalar tensor (0 when ``lam`` is 0 or there is no such weight). Add it to the batch-mean data
        loss, so that its gradient enters each update once, as in the authors' code.
    """
    total: Tensor | None = None
    if lam == 0.0:
        return torch.zeros(())
    for module in model.modules():
        if isinstance(module, (SpikingLinear, SpikingConv2d)) and module.weight.requires_grad:
            term = _NormPenalty.apply(module.weight, float(lam), float(beta), float(limit))
            total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total
