"""The TI46 speech golden test (docs/algorithm.md §6.3/6.4): BSA input → fixed reservoir → 64 → 26, T = 658,
one SGD step with lr 1e-5, EFFECT_RATIO off, no lateral inhibition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hm2bp.io import authors
from hm2bp.loss import rate_loss
from hm2bp.nn.layers import Reservoir, SpikingLinear

pytestmark = pytest.mark.golden

T = 658
SPEECH = "test/golden/speech/ti_alpha"


def _spikes(golden: Path, rel: str, n: int) -> np.ndarray:
    return authors.read_sparse_spikes(golden / SPEECH / "spikes" / rel, n, T)


def _layers(golden: Path, trained: bool) -> tuple[Reservoir, SpikingLinear, SpikingLinear]:
    w = golden / SPEECH / "weights"
    s = "_trained" if trained else ""
    reservoir = Reservoir(
        torch.from_numpy(authors.read_weight_list(w / "r_weights_info.txt", 135, 78)),
        torch.from_numpy(authors.read_weight_list(w / "r_weights_recurrent_info.txt", 135, 135)),
        v_th=20,
    )
    hidden = SpikingLinear(135, 64, 20, effect_ratio=False)
    output = SpikingLinear(64, 26, 5, output=True, effect_ratio=False)
    with torch.no_grad():
        hidden.weight.copy_(torch.from_numpy(authors.read_weight_list(w / f"h_weights_info{s}.txt", 64, 135)))
        output.weight.copy_(torch.from_numpy(authors.read_weight_list(w / f"o_weights_info{s}.txt", 26, 64)))
    return reservoir, hidden, output


@pytest.mark.parametrize("trained,split", [(False, "train"), (True, "test")])
def test_forward_every_layer_spike_for_spike(golden_dir: Path, trained: bool, split: str) -> None:
    x = _spikes(golden_dir, "Input_Response/0/input_spikes_0_0.dat", 78)
    reservoir, hidden, output = _layers(golden_dir, trained)
    gold_res = _spikes(golden_dir, "Reservoir_Response/0/reservoir_spikes_0_0.dat", 135)
    gold_hid = _spikes(golden_dir, f"Hidden_Response_Supv/{split}/0/hidden_0_spikes_0_0.dat", 64)
    gold_out = _spikes(golden_dir, f"Readout_Response_Supv/{split}/0/readout_spikes_0_0.dat", 26)
    with torch.no_grad():
        r = reservoir(torch.from_numpy(x).float().unsqueeze(1))
        h = hidden(r)
        o = output(h)
        h_layerwise = hidden(torch.from_numpy(gold_res).float().unsqueeze(1))
        o_layerwise = output(torch.from_numpy(gold_hid).float().unsqueeze(1))
    for name, got, gold in (("reservoir", r, gold_res), ("hidden", h, gold_hid), ("output", o, gold_out),
                            ("hidden (layer-wise)", h_layerwise, gold_hid), ("output (layer-wise)", o_layerwise, gold_out)):
        mismatches = int((got[:, 0].numpy().astype(bool) != gold).sum())
        assert mismatches == 0, f"{split}/{name}: {mismatches} mismatching spikes"
    assert gold_res.sum() > 1000 and gold_hid.sum() > 100


def test_sgd_gradients_match_within_rounding(golden_dir: Path) -> None:
    """g = (w − w_trained)/1e-5 from 6-significant-digit weights: within 0.2 absolute (docs/algorithm.md §6.4)."""
    x = _spikes(golden_dir, "Input_Response/0/input_spikes_0_0.dat", 78)
    reservoir, hidden, output = _layers(golden_dir, trained=False)
    labels = torch.tensor([0])
    counts = output(hidden(reservoir(torch.from_numpy(x).float().unsqueeze(1))), labels).sum(0)
    assert counts[0, 0] == 0, "the label neuron is silent in this test (spike insertion path)"
    rate_loss(counts, labels).backward()
    w = golden_dir / SPEECH / "weights"
    for name, layer, stem in (("hidden", hidden, "h_weights_info"), ("output", output, "o_weights_info")):
        n_post, n_pre = layer.weight.shape
        before = authors.read_weight_list(w / f"{stem}.txt", n_post, n_pre).astype(np.float64)
        after = authors.read_weight_list(w / f"{stem}_trained.txt", n_post, n_pre).astype(np.float64)
        gold = (before - after) / 1e-5
        ours = layer.weight.grad.double().numpy()
        err = np.abs(ours - gold).max()
        assert err < 0.2, f"{name}: max |g − g_golden| = {err:.3f}"
        assert np.abs(gold).max() > 50  # real, large gradients are being compared
