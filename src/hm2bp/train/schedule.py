"""Learning-rate schedules (docs/algorithm.md §4.3) and the per-epoch data order (docs/algorithm.md §4.5)."""

from __future__ import annotations

import math

import torch

__all__ = ["lr_at_epoch", "lr_at_step", "per_step_schedule", "shuffle_order"]


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
    if schedule == "cosine":  # its value at the start of the epoch needs the run length: see lr_at_step
        raise ValueError("the 'cosine' schedule changes every step: use lr_at_step")
    raise ValueError(f"unknown lr schedule {schedule!r} (use 'code', 'sqrt', 'constant' or 'cosine')")


def per_step_schedule(schedule: str, warmup_steps: int) -> bool:
    """Whether the learning rate changes within an epoch (else it is set once per epoch, as the authors)."""
    return schedule == "cosine" or warmup_steps > 0


def lr_at_step(base_lr: float, epoch: int, step: int, total_steps: int, schedule: str, warmup_steps: int = 0) -> float:
    """Learning rate of the update with 0-based global index ``step`` (in 0-based ``epoch``).

    ``"cosine"``: base_lr·½(1 + cos(π·step/total_steps)), from base_lr down to ~0 over ``total_steps`` updates;
    the other schedules as :func:`lr_at_epoch`. A linear warm-up multiplies the first ``warmup_steps`` updates
    by (step + 1)/warmup_steps.
    """
    if schedule == "cosine":
        lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    else:
        lr = lr_at_epoch(base_lr, epoch, schedule)
    if step < warmup_steps:
        lr *= (step + 1) / warmup_steps
    return lr


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
