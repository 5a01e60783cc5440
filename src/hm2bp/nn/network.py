"""A spiking network built from the paper's architecture strings, e.g. ``784-800-10`` or
``28x28-15c5-p2-40c5-p2-300-10``.

The grammar and the shapes are in :mod:`hm2bp.arch` (torch-free; ``parse_architecture`` and
``LayerSpec`` are re-exported here). The last token is the output layer, which gets the fixed lateral
inhibition and the output-layer rules of the backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..arch import LayerSpec, parse, parse_architecture
from ..errors import ConfigError
from ..functional.params import NeuronParams
from .layers import (
    Flatten,
    SpikingConv2d,
    SpikingLinear,
    SpikingPool2d,
    conv_stack_forward,
    linear_stack_forward,
)


class SpikingNetwork(nn.Module):
    """A feed-forward stack of spiking layers whose last layer is the output layer.

    ``forward(x, labels)`` takes input spikes ``[T, B, *input_shape]`` (flat inputs are reshaped to
    the image shape for conv nets) and returns the output spike train ``[T, B, n_classes]``; pass the
    labels when training so that the output layer can apply spike insertion and Λ (docs/algorithm.md §3.2, §3.4).
    With ``record=True`` the output spikes of every layer except ``Flatten`` are kept (detached) in
    ``hidden_spikes``, in layer order, the last one being the output.

    Args:
        layers: the modules in order; the last one must be a ``SpikingLinear`` built with ``output=True``.
        input_shape: ``(N,)`` or ``(C, H, W)`` without the time and batch dimensions.
        arch: the architecture string, kept for display and export.
    """

    def __init__(self, layers: Sequence[nn.Module], input_shape: tuple[int, ...], arch: str = "") -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        for i, layer in enumerate(self.layers):
            if hasattr(layer, "name"):
                layer.name = f"layers.{i} ({type(layer).__name__})"  # type: ignore[assignment]  # a str, not a submodule
        self.input_shape = tuple(input_shape)
        self.arch = arch
        self.hidden_spikes: list[Tensor] = []

    @property
    def output_layer(self) -> SpikingLinear:
        last = self.layers[-1]
        assert isinstance(last, SpikingLinear)
        return last

    def forward(self, x: Tensor, labels: Tensor | None = None, record: bool = False) -> Tensor:
        if x.dim() == 3 and len(self.input_shape) == 3:
            x = x.reshape(x.shape[0], x.shape[1], *self.input_shape)
        if tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(f"SpikingNetwork: expected input [T, B, {', '.join(map(str, self.input_shape))}], "
                             f"got {list(x.shape)}")
        recorded: list[Tensor] = []
        layers = list(self.layers)
        i = 0
        while i < len(layers):
            convs = self._conv_run(layers, i)
            if convs:  # consecutive conv/pool layers: one event-driven node, compact spikes in between
                stacked: list[Tensor] | None = [] if record else None
                out = conv_stack_forward(convs, x, stacked)
                if out is not None:
                    x = out
                    recorded += [t.detach() for t in stacked or []]
                    i += len(convs)
                    continue
            run = self._linear_run(layers, i)
            if len(run) >= 2:  # consecutive FC layers: one node, compact spikes in between
                stacked = [] if record else None
                is_last = i + len(run) == len(layers)
                out = linear_stack_forward(run, x, labels if is_last else None, stacked)
                if out is not None:
                    x = out
                    recorded += [t.detach() for t in stacked or []]
                    i += len(run)
                    continue
            layer = layers[i]
            x = layer(x, labels) if i == len(layers) - 1 else layer(x)
            if record and not isinstance(layer, Flatten):
                recorded.append(x.detach())
            i += 1
        self.hidden_spikes = recorded
        return x

    @staticmethod
    def _conv_run(layers: list[nn.Module], start: int) -> list[SpikingConv2d | SpikingPool2d]:
        """The HM2-BP SpikingConv2d/SpikingPool2d layers from ``start`` on, up to the first other layer."""
        run: list[SpikingConv2d | SpikingPool2d] = []
        for layer in layers[start:]:
            if not isinstance(layer, (SpikingConv2d, SpikingPool2d)) or not layer.learning_rule.fuses_stack:
                break
            run.append(layer)
        return run

    @staticmethod
    def _linear_run(layers: list[nn.Module], start: int) -> list[SpikingLinear]:
        """The HM2-BP SpikingLinear layers from ``start`` on, up to the first other layer."""
        run: list[SpikingLinear] = []
        for layer in layers[start:]:
            if not isinstance(layer, SpikingLinear) or not layer.learning_rule.fuses_stack:
                break
            run.append(layer)
        return run


def build_network(
    arch: str,
    thresholds: Sequence[float],
    *,
    lateral_inhibition: float | None = 1.0,
    effect_ratio: bool = True,
    desired: int = 35,
    fc_init: float = 1.0,
    conv_init: float = 0.5,
    tau_m: float = 64.0,
    tau_s: float = 8.0,
    t_ref: int = 2,
    backward_dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    rule: str = "hm2bp",
) -> SpikingNetwork:
    """Build a network from an architecture string and one threshold per conv, pool and FC layer.

    Example: ``build_network("28x28-15c5-p2-40c5-p2-300-10", [5, 2, 12, 4, 10, 10])`` is the paper's
    spiking CNN (docs/algorithm.md §5); ``build_network("784-800-10", [20, 8])`` its MNIST FC net.
    ``rule="bptt"`` trains the same network with surrogate-gradient BPTT instead of HM2-BP.

    Args:
        arch: architecture string (grammar in the module docstring).
        thresholds: ν of each conv, pool and FC layer, in order (docs/algorithm.md §1.2, §5).
        lateral_inhibition: w0 of the output layer's fixed lateral inhibition (docs/algorithm.md §1.2); None = none.
        effect_ratio: EFFECT_RATIO of the FC layers' backward pass (docs/algorithm.md §3.3).
        desired: DESIRED_LEVEL used by the output layer's silent-label spike insertion (docs/algorithm.md §3.2).
        fc_init, conv_init: weights start as U(−init, +init) (docs/algorithm.md §4.5).
        tau_m, tau_s, t_ref: neuron constants of every layer, in steps (docs/algorithm.md §1.1).
        backward_dtype: dtype of the S-PSP contractions in the backward pass.
        generator: source of the initial weights (layers drawn in order).
        rule: "hm2bp" or "bptt", for every layer.

    Returns:
        a :class:`SpikingNetwork`: ``SpikingConv2d``/``SpikingPool2d`` layers, a ``Flatten`` before the first
        FC layer of a conv net, ``SpikingLinear`` layers, the last one with ``output=True``. Input
        ``[T, B, *in_shape]`` (or flat ``[T, B, prod(in_shape)]``), output ``[T, B, n_classes]``.

    Raises:
        ConfigError: a bad string, a threshold count that does not match, or a kernel larger than its map.
    """
    a = parse(arch)  # validated, with every layer's input and output shape (kernels fit their maps)
    specs = a.layers
    if len(thresholds) != len(specs):
        raise ConfigError(f"architecture {arch!r} has {len(specs)} layers but {len(thresholds)} thresholds were given")
    for v in thresholds:
        if not (isinstance(v, (int, float)) and v > 0):
            raise ConfigError(f"thresholds must be positive numbers, got {list(thresholds)}")
    common: dict[str, Any] = {"backward_dtype": backward_dtype, "rule": rule}
    layers: list[nn.Module] = []
    for n, (spec, shape, v_th) in enumerate(zip(specs, a.input_shapes, thresholds)):
        last = n == len(specs) - 1
        # conv layers test v > ν, the others v > ν − 1e-6 (docs/algorithm.md §1.1 step 6)
        params = NeuronParams(v_th, tau_m, tau_s, t_ref, 0.0 if spec.kind == "conv" else 1e-6)
        if spec.kind == "conv":
            layers.append(SpikingConv2d(shape[0], spec.size, spec.kernel, params, init_scale=conv_init,
                                        generator=generator, **common))
        elif spec.kind == "pool":
            layers.append(SpikingPool2d(spec.size, params, **common))
        else:
            if len(shape) == 3:
                layers.append(Flatten())
            layers.append(
                SpikingLinear(
                    math.prod(shape), spec.size, params, init_scale=fc_init, generator=generator,
                    lateral_inhibition=lateral_inhibition if last else None, output=last,
                    effect_ratio=effect_ratio, desired=desired, **common,
                )
            )
    return SpikingNetwork(layers, a.input_shape, arch)


__all__ = ["LayerSpec", "SpikingNetwork", "build_network", "parse_architecture"]  # the first and last: from hm2bp.arch
