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
    """Predicted class = arg-max of the output counts; ties go to the lowest index (spec §1.3).

    Args:
        counts: ``[B, n_classes]`` output firing counts (``spikes.sum(0)``).

    Returns:
        int64 ``[B]``; all-zero counts predict class 0.
    """
    return counts.argmax(1)


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate_images` returns.

    Attributes:
        correct, total: correctly classified and all images.
        mean_winner_count: mean over images of the largest output count.
        confusion: int64 ``[n_classes, n_classes]``, rows = true class, columns = prediction.
    """

    correct: int
    total: int
    mean_winner_count: float
    confusion: np.ndarray

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.total, 1)


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
    """Classify uint8 images with fresh Bernoulli inputs (spec §1.5) and count the correct ones.

    Args:
        net: the network; its input size must be H·W (or D).
        images: ``[N, H, W]`` or ``[N, D]`` pixel values 0–255; labels: ``[N]``.
        T: time steps per sample. batch_size: images per forward pass.
        generator: source of the Bernoulli draws (:func:`~hm2bp.encoding.poisson_encode`); None = torch's
            global generator.
        device: where the network runs.
        progress: called as ``progress(done, total)`` after every batch.

    Returns:
        an :class:`EvalResult` (prediction = arg-max of the counts, spec §1.3).
    """
    images_t = torch.as_tensor(images)
    labels_t = torch.as_tensor(labels).long()
    n_classes = net.output_layer.out_features
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    correct, winners = 0, 0.0
    n = images_t.shape[0]
    for start in range(0, n, batch_size):
        x = poisson_encode(images_t[start : start + batch_size], T, generator).to(device=device, dtype=torch.float32)
        counts = net(x).sum(0).cpu()
        pred = predict(counts)
        y = labels_t[start : start + batch_size]
        correct += int((pred == y).sum())
        winners += float(counts.max(1).values.sum())
        np.add.at(confusion, (y.numpy(), pred.numpy()), 1)
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return EvalResult(correct, n, winners / max(n, 1), confusion)
