"""The spiking-CNN golden test of the authors' code (docs/algorithm.md §6.3/6.4): forward spikes, gradient signs,
and one exact-mode Adam update, for the plain (rate loss) and softmax variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hm2bp.io import authors
from hm2bp.loss import rate_loss, softmax_loss, weight_regularizer
from hm2bp.nn.network import SpikingNetwork, build_network

pytestmark = pytest.mark.golden

T = 450
LABEL = 5
ARCH = "28x28-5c5-p2-3c5-p2-100-10"
THRESHOLDS = [5, 2, 5, 2, 10, 5]  # SpikingCNNMnistConfig_test.txt
TRAINABLE = {0: "conv1", 2: "conv2", 5: "hidden", 6: "output"}
VARIANTS = {"plain": "", "softmax": "_softmax"}


def _input(golden: Path) -> torch.Tensor:
    x = authors.read_sparse_spikes(golden / "test/cnn_mnist/input_spikes_0_5.dat", 784, T)
    return torch.from_numpy(x).float().reshape(T, 1, 1, 28, 28)


def _network(golden: Path, variant: str, trained: bool) -> SpikingNetwork:
    wdir = golden / f"test/golden/cnn_mnist/weights{VARIANTS[variant]}"
    s = "_trained" if trained else ""
    net = build_network(ARCH, THRESHOLDS)
    weights = {
        0: authors.read_conv_weights(wdir / f"conv1_info{s}.txt", 5, 1, 5),
        2: authors.read_conv_weights(wdir / f"conv2_info{s}.txt", 3, 5, 5),
        5: authors.read_weight_list(wdir / f"hidden_info{s}.txt", 100, 48),
        6: authors.read_weight_list(wdir / f"output_info{s}.txt", 10, 100),
    }
    with torch.no_grad():
        for i, w in weights.items():
            net.layers[i].weight.copy_(torch.from_numpy(w))
    return net


def _golden_spikes(golden: Path, variant: str, split: str) -> dict[str, np.ndarray]:
    sp = golden / f"test/golden/cnn_mnist/spikes{VARIANTS[variant]}"
    return {
        "conv1": authors.read_dense_spike_map(sp / f"conv1/{split}/conv1_1.dat", 5, T, 24, 24),
        "pool1": authors.read_dense_spike_map(sp / f"pool1/{split}/pool1_1.dat", 5, T, 12, 12),
        "conv2": authors.read_dense_spike_map(sp / f"conv2/{split}/conv2_1.dat", 3, T, 8, 8),
        "pool2": authors.read_dense_spike_map(sp / f"pool2/{split}/pool2_1.dat", 3, T, 4, 4),
        "hidden": authors.read_sparse_spikes(sp / f"hidden/{split}/hidden.dat", 100, T),
        "output": authors.read_sparse_spikes(sp / f"output/{split}/output.dat", 10, T),
    }


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("trained,split", [(False, "train"), (True, "test")])
def test_forward_every_layer_spike_for_spike(golden_dir: Path, variant: str, trained: bool, split: str) -> None:
    net = _network(golden_dir, variant, trained)
    gold = _golden_spikes(golden_dir, variant, split)
    # End to end from the input raster...
    with torch.no_grad():
        net(_input(golden_dir), record=True)
    for (name, g), ours in zip(gold.items(), net.hidden_spikes):
        got = ours[:, 0].numpy().astype(bool).reshape(g.shape)
        assert (got != g).sum() == 0, f"{variant}/{split}/{name}: {(got != g).sum()} mismatching spikes"
    # ...and layer by layer from the golden spikes of the layer below (docs/algorithm.md §6.4 step 1).
    inputs = [_input(golden_dir)] + [torch.from_numpy(g).float().unsqueeze(1) for g in gold.values()]
    layers = [net.layers[i] for i in (0, 1, 2, 3, 5, 6)]
    with torch.no_grad():
        for k, (name, g) in enumerate(gold.items()):
            x = inputs[k].reshape(T, 1, -1) if name == "hidden" else inputs[k]
            got = layers[k](x)[:, 0].numpy().astype(bool).reshape(g.shape)
            assert (got != g).sum() == 0, f"{variant}/{split}/{name} (layer-wise): {(got != g).sum()} mismatches"
    assert sum(int(g.sum()) for g in gold.values()) > 20000  # the test exercises real activity


def _one_update(golden: Path, variant: str) -> tuple[SpikingNetwork, dict[int, torch.Tensor]]:
    net = _network(golden, variant, trained=False)
    labels = torch.tensor([LABEL])
    counts = net(_input(golden), labels).sum(0)
    data_loss = rate_loss(counts, labels) if variant == "plain" else softmax_loss(counts, labels)
    (data_loss + weight_regularizer(net, lam=10.0, beta=0.4, limit=8.0)).backward()
    grads = {i: net.layers[i].weight.grad.detach().clone() for i in TRAINABLE}
    return net, grads


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_gradient_sign(golden_dir: Path, variant: str) -> None:
    """sign(g) = sign(w − w_trained) for all 6,300 weights (Adam's first step is lr·sign(g))."""
    net, grads = _one_update(golden_dir, variant)
    trained = _network(golden_dir, variant, trained=True)
    total = 0
    for i, name in TRAINABLE.items():
        step = torch.sign(net.layers[i].weight.detach() - trained.layers[i].weight.detach())
        mismatches = int((torch.sign(grads[i]) != step).sum())
        assert mismatches == 0, f"{variant}/{name}: {mismatches} gradient signs differ"
        total += step.numel()
    assert total == 6300


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("fused", [False, True])
def test_exact_mode_adam_update_reproduces_trained_weights(golden_dir: Path, variant: str, fused: bool) -> None:
    """One exact-mode update (batch 1, Adam lr 1e-3) gives the *_info_trained.txt files to their 6 decimals."""
    net, _ = _one_update(golden_dir, variant)
    torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, fused=fused).step()
    trained = _network(golden_dir, variant, trained=True)
    for i, name in TRAINABLE.items():
        err = (net.layers[i].weight.detach() - trained.layers[i].weight.detach()).abs().max().item()
        assert err < 5e-7, f"{variant}/{name}: updated weights differ by {err:.2e} (> printed precision)"
