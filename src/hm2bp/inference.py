"""Classification with a trained spiking network: Poisson-encode images, run, arg-max of counts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .encoding import poisson_encode
from .nn.network import SpikingNetwork


def predict(counts: Tensor) -> Tensor:
    """Predicted class = arg-max of the output counts; ties go to the lowest index (docs/algorithm.md §1.3).

    Args:
        counts: ``[B, n_classes]`` output firing counts (``spikes.sum(0)``).

    Returns:
        int64 ``[B]``; all-zero counts predict class 0.
    """
    return counts.argmax(1)


@dataclass(frozen=True)
class EvalResult:
    """A network's output counts on N labelled samples, and what follows from them: the one result type
    of :func:`evaluate_images`, :func:`hm2bp.train.evaluate` and :func:`hm2bp.train.evaluate_checkpoint`.

    Attributes:
        counts: ``[N, n_classes]`` output firing counts.
        labels: int64 ``[N]`` true classes.
    """

    counts: Tensor
    labels: Tensor

    @property
    def predictions(self) -> Tensor:
        """int64 ``[N]``: arg-max of the counts, ties to the lowest index (docs/algorithm.md §1.3)."""
        if self.labels.numel() == 0:
            return torch.zeros(0, dtype=torch.int64)
        return predict(self.counts)

    @property
    def total(self) -> int:
        return int(self.labels.numel())

    n = total

    @property
    def correct(self) -> int:
        return int((self.predictions == self.labels).sum())

    @property
    def accuracy(self) -> float:
        """Fraction correct; NaN for an empty set (no accuracy to report)."""
        return self.correct / self.total if self.total else float("nan")

    @property
    def mean_winner_count(self) -> float:
        """Mean over samples of the largest output count (about 35 for a trained net, §6.4)."""
        return float(self.counts.max(1).values.double().mean()) if self.total else 0.0

    @property
    def confusion(self) -> np.ndarray:
        """int64 ``[n_classes, n_classes]``: rows are the true class, columns the prediction."""
        c = int(self.counts.shape[1]) if self.counts.dim() == 2 else 0
        out = np.zeros((c, c), dtype=np.int64)
        np.add.at(out, (self.labels.cpu().numpy(), self.predictions.cpu().numpy()), 1)
        return out


@torch.no_grad()
def evaluate_images(
    net: SpikingNetwork,
    images: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    T: int,
    *,
    batch_size: int = 100,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Classify uint8 images with fresh Bernoulli inputs (docs/algorithm.md §1.5) and count the correct ones.

    Args:
        net: the network; its input size must be H·W (or D).
        images: ``[N, H, W]`` or ``[N, D]`` pixel values 0–255; labels: ``[N]``.
        T: time steps per sample. batch_size: images per forward pass.
        generator: source of the Bernoulli draws (:func:`~hm2bp.encoding.poisson_encode`); None = torch's
            global generator.
        device: where the network runs.
        progress: called as ``progress(done, total)`` after every batch.

    Returns:
        an :class:`EvalResult` (prediction = arg-max of the counts, docs/algorithm.md §1.3).
    """
    images_t = torch.as_tensor(images)
    labels_t = torch.as_tensor(labels).long()
    n = images_t.shape[0]
    counts = [torch.zeros(0, net.output_layer.out_features)]
    for start in range(0, n, batch_size):
        x = poisson_encode(images_t[start : start + batch_size], T, generator).to(device=device, dtype=torch.float32)
        counts.append(net(x).sum(0).cpu())
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return EvalResult(torch.cat(counts), labels_t[:n])


__all__ = ["EvalResult", "evaluate_images", "predict"]
