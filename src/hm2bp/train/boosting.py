"""Boosting of sample weights (docs/algorithm.md §4.4; the authors' ``g_boostWeightUpdate``)."""

from __future__ import annotations

import torch

__all__ = ["update_boost_weights"]


def update_boost_weights(
    weights: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor, n_classes: int, rate: float = 20.0
) -> torch.Tensor:
    """One epoch's boost update; returns new weights (the input is not modified).

    Per class c: err_c = Σ_{n∈c, wrong} β_n / Σ_{n∈c} β_n (with the weights *before* the update); then
    every misclassified sample n of class c gets β_n ← β_n·exp(err_c / ``rate``). Correct samples keep
    their weight and nothing is renormalised, so the weights only grow.

    Args:
        weights: ``[N]`` boost weights β_n (float64 recommended; they start at 1).
        labels, predictions: ``[N]`` int64: the class of each sample and the prediction recorded during
            that epoch's training pass.
    """
    if not (weights.shape == labels.shape == predictions.shape) or weights.dim() != 1:
        raise ValueError(f"weights, labels and predictions must be equal-length 1-D tensors; got "
                         f"{tuple(weights.shape)}, {tuple(labels.shape)}, {tuple(predictions.shape)}")
    wrong = predictions != labels
    total = torch.zeros(n_classes, dtype=weights.dtype).index_add_(0, labels, weights)
    wrong_sum = torch.zeros(n_classes, dtype=weights.dtype).index_add_(0, labels, weights * wrong.to(weights.dtype))
    err = wrong_sum / torch.where(total > 0, total, torch.ones_like(total))  # classes without samples: 0
    factor = torch.exp(err[labels] / rate)
    return torch.where(wrong, weights * factor, weights)
