"""Load the authors' trained networks and weight files into hm2bp models."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import DataFormatError
from ..nn.layers import SpikingConv2d, SpikingLinear
from ..nn.network import SpikingNetwork, build_network
from .authors import CNN_CHECKPOINT_ARCH, read_checkpoint_cnn

PAPER_CNN_ARCH = "28x28-15c5-p2-40c5-p2-300-10"
PAPER_CNN_THRESHOLDS = (5.0, 2.0, 12.0, 4.0, 10.0, 10.0)
"""conv1, pool1, conv2, pool2, hidden, output thresholds of `SpikingCNNMnistConfig.txt` (docs/algorithm.md §5)."""


def load_authors_cnn_checkpoint(path: str | os.PathLike[str]) -> SpikingNetwork:
    """Build the paper's spiking CNN and load ``Result/checkPoint_cnn_best.txt(.gz)`` (docs/algorithm.md §6.2).

    The stored biases must be zero (the authors never inject a bias) and the stored lateral block must
    be the fixed inhibition −1 off the diagonal; anything else is reported as a format error.
    """
    blocks = read_checkpoint_cnn(path, CNN_CHECKPOINT_ARCH)
    net = build_network(PAPER_CNN_ARCH, PAPER_CNN_THRESHOLDS, lateral_inhibition=1.0)
    trainable = [m for m in net.layers if isinstance(m, (SpikingConv2d, SpikingLinear))]
    layer_ids = [i for i, spec in enumerate(CNN_CHECKPOINT_ARCH) if spec["kind"] != "pool"]
    for module, i in zip(trainable, layer_ids):
        weight = blocks[f"layer{i}.weight"]
        if np.any(blocks[f"layer{i}.bias"] != 0):
            raise DataFormatError(path, f"layer {i} has non-zero biases; hm2bp networks have no bias")
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(weight))
    lateral = blocks[f"layer{layer_ids[-1]}.lateral"]
    expected = -(1.0 - np.eye(lateral.shape[0], dtype=np.float32))
    if not np.array_equal(lateral, expected):
        raise DataFormatError(path, "the output lateral block is not the fixed inhibition (-1 off the diagonal)")
    return net
