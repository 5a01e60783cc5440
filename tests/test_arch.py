"""hm2bp.arch: architecture strings, shapes and counts, checked against the built networks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from hm2bp.arch import Architecture, LayerSpec, parse, parse_architecture
from hm2bp.errors import ConfigError
from hm2bp.nn.network import build_network

CNN = "28x28-15c5-p2-40c5-p2-300-10"


def test_fc_string() -> None:
    a = parse("784-800-10")
    assert a.input_shape == (784,)
    assert a.layers == (LayerSpec("fc", 800), LayerSpec("fc", 10))
    assert a.shapes == ((800,), (10,))
    assert a.n_classes == 10 and a.n_inputs == 784
    assert a.n_parameters() == 784 * 800 + 800 * 10
    assert a.n_neurons() == 810


def test_paper_cnn_shapes_and_counts() -> None:
    a = parse(CNN)
    assert a.input_shape == (1, 28, 28)
    assert a.shapes == ((15, 24, 24), (15, 12, 12), (40, 8, 8), (40, 4, 4), (300,), (10,))
    assert a.input_shapes[4] == (40, 4, 4)  # 640 inputs to the hidden layer (§5)
    # the authors' checkpoint holds 210,840 floats: these weights + 365 zero biases + the 10x10 lateral matrix
    assert a.n_parameters() == 210_375
    assert a.n_parameters() + (15 + 40 + 300 + 10) + 100 == 210_840


@pytest.mark.parametrize("arch,shape", [("5x5x2-3c2-p2-4", (3, 2, 2)), ("5x5-p2-4", (1, 3, 3)),
                                        ("7x4-1c4-p3-2", (1, 2, 1)), ("6X6-2C3-p2-4", (2, 2, 2))])
def test_pool_rounds_up_and_case_is_ignored(arch: str, shape: tuple[int, ...]) -> None:
    assert parse(arch).shapes[-2] == shape


def test_input_channels_last_in_string_first_in_shape() -> None:
    assert parse("34x34x2-800-10").input_shape == (2, 34, 34)
    assert parse("34x34x2-800-10").n_inputs == 2312


def test_parse_architecture_keeps_the_old_tuple_form() -> None:
    in_shape, layers = parse_architecture("8x8-4c3-p2-10")
    assert in_shape == (1, 8, 8)
    assert layers == [LayerSpec("conv", 4, 3), LayerSpec("pool", 2), LayerSpec("fc", 10)]


@pytest.mark.parametrize("arch,words", [
    ("784", "at least one layer"),
    ("784--10", "at least one layer"),
    ("0-10", "bad input"),
    ("2x3x4x5-10", "bad input"),
    ("28x28-15c5-p2", "last layer must be fully connected"),
    ("784-15c5-10", "need an image input"),
    ("28x28-100-5c3-10", "must come before"),
    ("28x28-0c5-10", "positive size"),
    ("28x28-5c0-10", "kernel of at least 1"),
    ("28x28-p0-10", "positive size"),
    ("28x28-5c29-10", "larger than the 28x28 map"),
    ("28x28-5x5-10", "unknown layer token"),
    ("784-²-10", "unknown layer token"),
    ("784-" + "9" * 5000 + "-10", "too large"),
])
def test_bad_strings_name_the_problem(arch: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse(arch)


def test_not_a_string() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        parse(784)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["784-800-10", "64-20-20-10", "8x8-3c3-p2-10", "9x9x2-4c2-p3-5-3", CNN])
def test_counts_and_shapes_match_the_built_network(arch: str) -> None:
    a = parse(arch)
    net = build_network(arch, [5.0] * len(a.layers), generator=torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == a.n_parameters()
    assert net.input_shape == a.input_shape
    x = torch.zeros(3, 1, *a.input_shape)
    with torch.no_grad():
        net(x, record=True)
    assert [tuple(s.shape[2:]) for s in net.hidden_spikes] == list(a.shapes)


def test_import_is_torch_free() -> None:
    code = "import sys, hm2bp.arch, hm2bp.config; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_architecture_is_frozen() -> None:
    a = parse("784-10")
    assert isinstance(a, Architecture)
    with pytest.raises(AttributeError):
        a.text = "x"  # type: ignore[misc]
