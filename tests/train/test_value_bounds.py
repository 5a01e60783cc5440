"""#18 items 4, 11, 17: values that are legal numbers but cannot give a working run are refused by key."""

from __future__ import annotations

import pytest

from hm2bp.config import load_config
from hm2bp.errors import ConfigError

pytestmark = pytest.mark.reliability


@pytest.mark.parametrize("override, match", [
    ("model.thresholds=1e39,5", r"model.thresholds: 1e\+39 does not fit float32"),
    ("model.thresholds=5,3.5e38", r"model.thresholds: 3.5e\+38 does not fit float32"),
    ("model.thresholds=1e-45,5", r"model.thresholds: 1e-45 is not above the threshold offset theta_eps"),
    ("model.thresholds=5,1e-6", r"model.thresholds: 1e-06 is not above"),
    ("model.tau_m=1e308", r"model.tau_m: must lie in \[1, 1e\+07\] steps"),
    ("model.tau_s=0.5", r"model.tau_s: must lie in \[1"),
    ("model.fc_init=1e39", r"model.fc_init: 1e\+39 does not fit float32"),
    ("model.conv_init=1e39", r"model.conv_init: 1e\+39 does not fit float32"),
    ("train.n_swaps=1000000000000", r"train.n_swaps: at most 100,000,000 swaps .* 14,901 GiB"),
    ("train.device=cuda:99999999999999999999", r"train.device: CUDA device index 99999999999999999999 is out"),
    ("train.lr=1e39", r"train.lr: 1e\+39 does not fit float32"),
])
def test_refused_by_key(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config("digits", [override])


@pytest.mark.parametrize("override", ["model.thresholds=3e38,5", "model.tau_m=1e7", "model.tau_s=1",
                                      "train.n_swaps=100000000", "train.device=cuda:7", "model.fc_init=1e30"])
def test_limits_themselves_are_accepted(override: str) -> None:
    load_config("digits", [override])


def test_silent_hidden_layer_warns() -> None:
    """#18 item 4: a threshold that fits float32 but that no input reaches (1e30) leaves the layer silent."""
    import warnings

    from hm2bp.train.datasets import load_datasets
    from hm2bp.train.input_checks import SilentLayerWarning, check_layers_fire
    from hm2bp.train.loop import build_model

    over = ["model.arch=64-20-10", "model.T=30", "model.desired=10", "model.undesired=2", "data.n_train=40"]
    cfg = load_config("digits", [*over, "model.thresholds=1e30,5"])
    train_set, _ = load_datasets(cfg)
    with pytest.warns(SilentLayerWarning, match=r"layer 0 \(threshold 1e\+30, model.thresholds\[0\]\) emits no spike"):
        check_layers_fire(build_model(cfg), train_set, cfg.model.thresholds)
    cfg = load_config("digits", [*over, "model.thresholds=2,5"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SilentLayerWarning)
        check_layers_fire(build_model(cfg), load_datasets(cfg)[0], cfg.model.thresholds)


def test_a_silent_hidden_layer_still_learns_what_the_warning_says() -> None:
    """The SilentLayerWarning's claims, on one HM2-BP step: with hidden layer 0 silent, the weights above it get
    no gradient (their inputs never spike) while its own weights do (the error reaches them through the
    silent-neuron constants), so it can learn to fire."""

    from hm2bp.train.datasets import load_datasets
    from hm2bp.train.loop import build_model
    from hm2bp.train.objective import data_loss

    over = ["model.arch=64-20-10", "model.T=30", "model.desired=10", "model.undesired=2", "data.n_train=20",
            "model.thresholds=1e4,5"]
    cfg = load_config("digits", over)
    train_set, _ = load_datasets(cfg)
    model = build_model(cfg)
    x, labels = train_set.get(list(range(8)), 0), train_set.labels[:8]
    out = model(x, labels, record=True)
    assert not bool(model.hidden_spikes[0].any()), "layer 0 must be silent for this test"
    data_loss(cfg, out.sum(0), labels, None).backward()
    first, second = (layer.weight.grad for layer in model.layers)
    assert first is not None and float(first.abs().sum()) > 0
    assert second is None or float(second.abs().sum()) == 0
