"""Architecture strings and the shapes they imply, without torch (docs/algorithm.md §1.2, §5).

An architecture is written as in the paper, tokens joined by ``-``:

- the first token is the input: ``N`` (a flat vector), ``HxW`` (one channel) or ``HxWxC``;
- ``Kc<k>`` is a conv layer of K maps with k×k kernels (no padding, stride 1): ``D → D − k + 1``;
- ``p<s>`` is a pool layer with s×s windows and stride s: ``D → ⌈D/s⌉``;
- a plain number is a fully connected layer of that many neurons.

Conv and pool layers come first and need an image input; the last token is a fully connected layer, the
output. Examples: ``784-800-10`` (MNIST FC), ``28x28-15c5-p2-40c5-p2-300-10`` (MNIST CNN).

Image shapes are ``(C, H, W)``; a conv net's first FC layer sees them flattened channel-major
(index ``c·H·W + x·W + y``, §1.2). Everything here is plain Python, so the config layer can validate an
architecture without importing torch or the network code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["Architecture", "LayerSpec", "parse", "parse_architecture"]

Shape = tuple[int, ...]

_CONV = re.compile(r"^([0-9]+)c([0-9]+)$")
_POOL = re.compile(r"^p([0-9]+)$")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of an architecture string.

    Attributes:
        kind: ``"conv"``, ``"pool"`` or ``"fc"``.
        size: output maps (conv), window and stride (pool) or neurons (fc).
        kernel: kernel side k (conv only; 0 otherwise).
    """

    kind: str
    size: int
    kernel: int = 0

    def output_shape(self, in_shape: Shape, arch: str = "") -> Shape:
        """The shape this layer produces from ``in_shape`` (an FC layer flattens an image first)."""
        if self.kind == "fc":
            return (self.size,)
        c, h, w = in_shape
        if self.kind == "conv":
            if self.kernel > min(h, w):
                raise ConfigError(f"architecture {arch!r}: kernel {self.kernel} larger than the {h}x{w} map")
            return (self.size, h - self.kernel + 1, w - self.kernel + 1)
        return (c, -(-h // self.size), -(-w // self.size))

    def n_parameters(self, in_shape: Shape) -> int:
        """Trainable weights (no layer has a bias, §1.1; the lateral inhibition is fixed, §1.2)."""
        if self.kind == "conv":
            return self.size * in_shape[0] * self.kernel * self.kernel
        if self.kind == "fc":
            return self.size * math.prod(in_shape)
        return 0


@dataclass(frozen=True)
class Architecture:
    """A parsed architecture string: the input shape and the layers, with their shapes.

    Attributes:
        text: the string it was parsed from.
        input_shape: ``(N,)`` or ``(C, H, W)``, without time and batch dimensions.
        layers: the conv, pool and FC layers in order; the last one is the output layer.
        shapes: the output shape of each layer, in the same order (validated: kernels fit their maps).
    """

    text: str
    input_shape: Shape
    layers: tuple[LayerSpec, ...]
    shapes: tuple[Shape, ...]

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_classes(self) -> int:
        return self.layers[-1].size

    @property
    def input_shapes(self) -> tuple[Shape, ...]:
        """The input shape of each layer: the network input, then each layer's output."""
        return (self.input_shape, *self.shapes[:-1])

    def n_parameters(self) -> int:
        """Trainable weights of the whole network."""
        return sum(spec.n_parameters(s) for spec, s in zip(self.layers, self.input_shapes))

    def n_neurons(self) -> int:
        """Spiking neurons of all layers (the input layer only relays spikes and is not counted)."""
        return sum(math.prod(s) for s in self.shapes)


_MAX_DIGITS = 18  # fits int64 (memory checks refuse what cannot be built); int() refuses > 4,300 digits


def _int(arch: str, token: str, digits: str) -> int:
    if len(digits) > _MAX_DIGITS:
        raise ConfigError(f"architecture {arch!r}: size {digits[:12]}… in {token[:24]!r} is too large")
    return int(digits)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone accepts '²', which int() refuses


def _parse_input(arch: str, token: str) -> Shape:
    dims = token.split("x")
    if len(dims) > 3 or not all(_is_number(d) and _int(arch, token, d) > 0 for d in dims):
        raise ConfigError(f"architecture {arch!r}: bad input {token!r} (use N, HxW or HxWxC)")
    sizes = [int(d) for d in dims]
    if len(sizes) == 1:
        return (sizes[0],)
    return (sizes[2] if len(sizes) == 3 else 1, sizes[0], sizes[1])


def _parse_layer(arch: str, token: str) -> LayerSpec:
    if (m := _CONV.match(token)) is not None:
        spec = LayerSpec("conv", _int(arch, token, m.group(1)), _int(arch, token, m.group(2)))
        if spec.kernel < 1:
            raise ConfigError(f"architecture {arch!r}: layer {token!r} needs a kernel of at least 1")
    elif (m := _POOL.match(token)) is not None:
        spec = LayerSpec("pool", _int(arch, token, m.group(1)))
    elif _is_number(token):
        spec = LayerSpec("fc", _int(arch, token, token))
    else:
        raise ConfigError(f"architecture {arch!r}: unknown layer token {token!r} (use e.g. 15c5, p2, 800)")
    if spec.size < 1:
        raise ConfigError(f"architecture {arch!r}: layer {token!r} must have a positive size")
    return spec


def _check_order(arch: str, in_shape: Shape, layers: list[LayerSpec]) -> None:
    if layers[-1].kind != "fc":
        raise ConfigError(f"architecture {arch!r}: the last layer must be fully connected (the output)")
    seen_fc = False
    for spec in layers:
        seen_fc |= spec.kind == "fc"
        if seen_fc and spec.kind != "fc":
            raise ConfigError(f"architecture {arch!r}: conv/pool layers must come before the fully connected ones")
        if spec.kind != "fc" and len(in_shape) == 1:
            raise ConfigError(f"architecture {arch!r}: conv/pool layers need an image input such as 28x28")


def parse(arch: str) -> Architecture:
    """Parse and validate an architecture string, propagating the shapes through its layers.

    Raises:
        ConfigError: naming the string and the bad token (unknown token, zero size, conv/pool after an FC
            layer or on a flat input, a last layer that is not FC, a kernel larger than its map).
    """
    if not isinstance(arch, str):
        raise ConfigError(f"architecture must be a string such as '784-800-10'; got {arch!r}")
    tokens = [t.strip().lower() for t in arch.split("-")]
    if len(tokens) < 2 or any(not t for t in tokens):
        raise ConfigError(f"architecture {arch!r}: need an input and at least one layer, e.g. '784-800-10'")
    in_shape = _parse_input(arch, tokens[0])
    layers = [_parse_layer(arch, t) for t in tokens[1:]]
    _check_order(arch, in_shape, layers)
    shapes: list[Shape] = []
    shape = in_shape
    for spec in layers:
        shape = spec.output_shape(shape, arch)
        shapes.append(shape)
    return Architecture(arch, in_shape, tuple(layers), tuple(shapes))


def parse_architecture(arch: str) -> tuple[Shape, list[LayerSpec]]:
    """``(input shape, layers)`` of an architecture string: :func:`parse` without the shapes."""
    a = parse(arch)
    return a.input_shape, list(a.layers)
