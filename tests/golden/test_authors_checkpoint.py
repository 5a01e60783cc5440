"""The authors' trained spiking CNN (Result/checkPoint_cnn_best.txt, docs/algorithm.md §6.2) imported into hm2bp."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hm2bp.data.idx import load_mnist
from hm2bp.inference import evaluate_images
from hm2bp.io.import_authors import load_authors_cnn_checkpoint

pytestmark = pytest.mark.golden


def test_checkpoint_classifies_mnist_test_slice(golden_dir: Path, mnist_dir: Path) -> None:
    """A CI-sized slice (the first 200 test images); the full 10,000 is in docs/results.md."""
    net = load_authors_cnn_checkpoint(golden_dir / "Result/checkPoint_cnn_best.txt")
    assert net.output_layer.lateral_weight is not None
    assert float(net.output_layer.lateral_weight[0, 1]) == -1.0
    images, labels = load_mnist(mnist_dir, "test")
    n = 200
    result = evaluate_images(net, images[:n], labels[:n], T=400, batch_size=50,
                             generator=torch.Generator().manual_seed(0))
    assert result.accuracy >= 0.985, f"{result.correct}/{n} correct"
    assert 25 <= result.mean_winner_count <= 45  # docs/algorithm.md §6.4: winner counts around 35
