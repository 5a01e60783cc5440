"""Learning-rate schedules (spec §4.3) and the per-epoch data order (spec §4.5)."""

from __future__ import annotations

import math

import torch

__all__ = ["lr_at_epoch", "shuffle_order"]


def lr_at_epoch(base_lr: float, epoch: int, schedule: str = "code") -> float:
    """Learning rate of 0-based ``epoch``.

    - ``"code"`` (default; the authors' current code, matching the MNIST and N-MNIST logs): epochs 0 and 1
      use ``base_lr``; epoch e ≥ 1 uses base_lr/√e. With 1e-3: epoch 2 → 7.071e-4, epoch 199 → 7.089e-5.
    - ``"sqrt"`` (the older version that produced the CNN log): base_lr/√(e+1); epoch 1 → 7.071e-4,
      epoch 199 → 7.071e-5.
    - ``"constant"``: base_lr.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if schedule == "code":
        return base_lr / math.sqrt(max(epoch, 1))
    if schedule == "sqrt":
        return base_lr / math.sqrt(epoch + 1)
    if schedule == "constant":
        return base_lr
    raise ValueError(f"unknown lr schedule {schedule!r} (use 'code', 'sqrt' or 'constant')")


def shuffle_order(order: torch.Tensor, method: str, generator: torch.Generator, n_swaps: int = 5000) -> torch.Tensor:
    """Return the data order for the next epoch.

    - ``"swaps5000"``: the authors' ``cuMatrixVector::shuffle(5000, …)``: ``n_swaps`` swaps of two
      uniformly drawn positions, applied one after another to the current order (so the order drifts
      slowly from epoch to epoch);
    - ``"permutation"``: a fresh uniform permutation of the current order;
    - ``"none"``: unchanged.
    """
    n = order.numel()
    if method == "none" or n < 2:
        return order.clone()
    if method == "permutation":
        return order[torch.randperm(n, generator=generator)]
    if method == "swaps5000":
        out = order.clone().tolist()
        pairs = torch.randint(0, n, (n_swaps, 2), generator=generator).tolist()
        for a, b in pairs:
            out[a], out[b] = out[b], out[a]
        return torch.tensor(out, dtype=order.dtype)
    raise ValueError(f"unknown shuffle method {method!r}")
