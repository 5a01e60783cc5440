"""Layers take their neuron constants as one NeuronParams object (#16 item 5), or the threshold and keywords."""

from __future__ import annotations

import pytest
import torch

from hm2bp.errors import ConfigError
from hm2bp.functional.params import NeuronParams
from hm2bp.nn.layers import Reservoir, SpikingConv2d, SpikingLinear, SpikingPool2d


def test_params_object_is_kept_as_given() -> None:
    p = NeuronParams(3.0, tau_m=20.0, tau_s=4.0, t_ref=1, theta_eps=0.0, window=30)
    layers = [SpikingLinear(4, 3, p), SpikingConv2d(1, 2, 3, p), SpikingPool2d(2, p),
              Reservoir(torch.zeros(3, 4), torch.zeros(3, 3), p)]
    assert all(layer.params is p for layer in layers)  # the window travels, nothing to patch afterwards


def test_threshold_and_keywords_build_the_params() -> None:
    assert SpikingLinear(4, 3, 5.0).params == NeuronParams(5.0, 64.0, 8.0, 2, 1e-6)
    assert SpikingLinear(4, 3, v_th=5.0, tau_m=30.0).params == NeuronParams(5.0, 30.0, 8.0, 2, 1e-6)
    assert SpikingConv2d(1, 2, 3, 2.0).params.theta_eps == 0.0  # conv layers test v > ν
    assert SpikingPool2d(2, v_th=1.5, t_ref=3).params == NeuronParams(1.5, 64.0, 8.0, 3, 1e-6)


def test_params_and_constants_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="either a NeuronParams or the constants"):
        SpikingLinear(4, 3, NeuronParams(3.0), tau_m=20.0)
    with pytest.raises(ConfigError, match="threshold once"):
        SpikingLinear(4, 3)
    with pytest.raises(ConfigError, match="threshold once"):
        SpikingLinear(4, 3, 2.0, v_th=2.0)
