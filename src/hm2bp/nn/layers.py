"""Spiking layers as ``nn.Module``s. Spike trains are time-major: ``[T, B, N]`` or ``[T, B, C, H, W]``.

Each layer runs the exact LIF forward pass of docs/algorithm.md §1 and, under autograd, the HM2-BP backward pass
of docs/algorithm.md §3 (see ``hm2bp.functional.hm2bp`` for how the count error travels between layers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..functional import conv_events
from ..functional.autograd import (
    LinearSpec,
    OutputSpec,
    SpikingConv2dFunction,
    SpikingLinearFunction,
    SpikingLinearStackFunction,
    SpikingPool2dFunction,
    conv_drive,
    input_events,
    linear_drive,
    pool_drive,
)
from ..functional.neuron import simulate_lif
from ..functional.params import NeuronParams
from ..functional.surrogate import simulate_lif_bptt


class _HM2BPRule:
    """The HM2-BP backward pass (``functional/autograd.py``): exact spiking forward, docs/algorithm.md §3 backward."""

    name = "hm2bp"
    fuses_stack = True
    """Consecutive FC layers may run as one autograd node (``linear_stack_forward``), and so may
    consecutive conv/pool layers (``conv_stack_forward``)."""

    def linear(self, layer: SpikingLinear, x: Tensor, labels: Tensor | None) -> Tensor:
        keep = torch.is_grad_enabled() and (layer.weight.requires_grad or x.requires_grad)
        return SpikingLinearFunction.apply(x, layer.weight, layer.spec(labels), keep)

    def conv(self, layer: SpikingConv2d, x: Tensor) -> Tensor:
        out = conv_stack_forward([layer], x, None)  # the event-driven path, where the input allows it
        if out is not None:
            return out
        return SpikingConv2dFunction.apply(x, layer.weight, layer.params, layer.backward_dtype, layer.name)

    def pool(self, layer: SpikingPool2d, x: Tensor) -> Tensor:
        out = conv_stack_forward([layer], x, None)
        if out is not None:
            return out
        return SpikingPool2dFunction.apply(x, layer.pool, layer.params, layer.backward_dtype, layer.name)


class _BPTTRule:
    """Surrogate-gradient BPTT through the same LIF neurons (``functional/surrogate.py``)."""

    name = "bptt"
    fuses_stack = False

    def linear(self, layer: SpikingLinear, x: Tensor, labels: Tensor | None) -> Tensor:
        return simulate_lif_bptt(linear_drive(x, layer.weight), layer.params, layer.lateral_weight)

    def conv(self, layer: SpikingConv2d, x: Tensor) -> Tensor:
        return simulate_lif_bptt(conv_drive(x, layer.weight), layer.params)

    def pool(self, layer: SpikingPool2d, x: Tensor) -> Tensor:
        return simulate_lif_bptt(pool_drive(x, layer.pool), layer.params)


_RULES: dict[str, _HM2BPRule | _BPTTRule] = {"hm2bp": _HM2BPRule(), "bptt": _BPTTRule()}
RULES = tuple(_RULES)
"""Learning rules: "hm2bp" (the HM2-BP backward pass) or "bptt" (surrogate-gradient BPTT on the same
neuron, ``hm2bp.functional.surrogate``), for comparing rules on identical networks. A layer looks its rule up
once, when it is built."""


def learning_rule(rule: str) -> _HM2BPRule | _BPTTRule:
    """The rule object called ``rule`` (ConfigError for an unknown name)."""
    if rule not in _RULES:
        raise ConfigError(f"learning rule must be one of {RULES}, got {rule!r}")
    return _RULES[rule]


def neuron_params(neuron: NeuronParams | float | None, v_th: float | None, tau_m: float | None,
                  tau_s: float | None, t_ref: int | None, theta_eps: float | None, default_theta_eps: float,
                  name: str) -> NeuronParams:
    """A layer's constants: ``neuron`` itself when it is a NeuronParams (window included), else built from the
    threshold (``neuron`` as a number, or ``v_th``) and the keywords, unset ones at the paper's values."""
    constants = {"v_th": v_th, "tau_m": tau_m, "tau_s": tau_s, "t_ref": t_ref, "theta_eps": theta_eps}
    given = sorted(k for k, v in constants.items() if v is not None)
    if isinstance(neuron, NeuronParams):
        if given:
            raise ConfigError(f"{name}: pass either a NeuronParams or the constants {given}, not both")
        return neuron
    if (neuron is None) == (v_th is None):
        raise ConfigError(f"{name}: give the threshold once, as a NeuronParams, a number or v_th=")
    return NeuronParams(neuron if neuron is not None else v_th,  # type: ignore[arg-type]
                        64.0 if tau_m is None else tau_m, 8.0 if tau_s is None else tau_s,
                        2 if t_ref is None else t_ref, default_theta_eps if theta_eps is None else theta_eps)


def _uniform_(weight: Tensor, scale: float, generator: torch.Generator | None) -> Tensor:
    """U(−scale, +scale): what the authors' configs call "Bernoulli" initialisation (docs/algorithm.md §4.5)."""
    with torch.no_grad():
        return weight.uniform_(-scale, scale, generator=generator)


def _check_input(x: Tensor, ndim: int, name: str, last: tuple[int, ...]) -> None:
    if x.dim() != ndim or tuple(x.shape[2:]) != last:
        expected = "[T, B, " + ", ".join(str(s) for s in last) + "]"
        raise ValueError(f"{name}: expected input spikes of shape {expected}, got {list(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name}: the input spike train has no time steps (T = 0)")


class SpikingLinear(nn.Module):
    """Fully connected spiking layer (docs/algorithm.md §1.2 SPIKING), optionally the output layer.

    Args:
        in_features, out_features: N_in, N_out.
        neuron: the layer's constants as a ``NeuronParams`` (kept as given, S-PSP window included), or the
            threshold ν alone (also ``v_th=``), the others then from ``tau_m``, ``tau_s``, ``t_ref``,
            ``theta_eps`` or the paper's values (64, 8, 2, 1e-6: spike test ``v > ν − 1e-6``).
        lateral_inhibition: w0 of the fixed output lateral inhibition (−w0 between different neurons,
            docs/algorithm.md §1.2), or None for none.
        output: this is the network's output layer: in the backward pass it applies the silent-label
            spike insertion (§3.2) and, with lateral inhibition, the lateral factor Λ (§3.4). Needs
            ``labels`` in ``forward``.
        effect_ratio: use r = e/o_j in the error sent down (EFFECT_RATIO of the authors; docs/algorithm.md §3.3).
        desired: DESIRED_LEVEL, used by the spike insertion.
        init_scale: weights start as U(−init_scale, init_scale) (1 for FC layers in the paper).
        backward_dtype: dtype of the S-PSP contractions in the backward pass.
        rule: "hm2bp" (this backward pass) or "bptt" (surrogate-gradient BPTT on the same neuron).

    Forward: drive I(t) = W·s(t), plus −w0·Σ_{l≠i} s_l(t) with lateral inhibition, integrated one step
    later by the LIF neurons of docs/algorithm.md §1.1. Backward (docs/algorithm.md §3.3): g_ij = δ̂_i·e_{i|j}·(1 + σ_i)·Λ_i with
    δ̂ = δ/ν, and δ_j below = Σ_i δ̂_i·w_ij·r_ij (r_ij = 1 without ``effect_ratio``).

    On the CPU with float32 weights and sparse 0/1 input (the compiled kernels, ``functional/events.py``)
    the drive is summed from the input spikes inside the LIF scan, and the backward pass keeps one byte
    per (sample × step × output neuron); otherwise (GPU, other dtypes, dense or graded input) the drive is
    one GEMM. ``SpikingNetwork`` runs consecutive such layers as one autograd node with no float spike
    tensor between them; the spikes and gradients are the same either way.

    Shapes: input ``[T, B, in_features]`` → output spikes ``[T, B, out_features]`` (0/1, float);
    ``weight`` is ``[out_features, in_features]``.
    """

    lateral_weight: Tensor | None  # a buffer (None without lateral inhibition)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        neuron: NeuronParams | float | None = None,
        *,
        v_th: float | None = None,
        tau_m: float | None = None,
        tau_s: float | None = None,
        t_ref: int | None = None,
        theta_eps: float | None = None,
        lateral_inhibition: float | None = None,
        output: bool = False,
        effect_ratio: bool = True,
        desired: int = 35,
        init_scale: float = 1.0,
        backward_dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
        rule: str = "hm2bp",
    ) -> None:
        super().__init__()
        self.learning_rule = learning_rule(rule)
        self.rule = rule
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"SpikingLinear: sizes must be positive, got {in_features} -> {out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.params = neuron_params(neuron, v_th, tau_m, tau_s, t_ref, theta_eps, 1e-6, "SpikingLinear")
        self.weight = nn.Parameter(_uniform_(torch.empty(out_features, in_features), init_scale, generator))
        self.lateral_strength = lateral_inhibition
        lateral = None
        if lateral_inhibition is not None:
            lateral = -float(lateral_inhibition) * (1.0 - torch.eye(out_features))
        self.register_buffer("lateral_weight", lateral)
        self.output, self.effect_ratio, self.desired = output, effect_ratio, desired
        self.backward_dtype = backward_dtype
        self.name = "SpikingLinear"  # SpikingNetwork sets "layers.<i> (...)" for its error messages

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        _check_input(x, 3, "SpikingLinear", (self.in_features,))
        return self.learning_rule.linear(self, x.to(self.weight.dtype), labels)

    def spec(self, labels: Tensor | None = None) -> LinearSpec:
        """This layer's settings for its autograd Functions (``labels``: the output layer's targets)."""
        output_spec = None
        if self.output:
            output_spec = OutputSpec(labels, float(self.lateral_strength or 0.0), self.desired)
        return LinearSpec(self.params, self.lateral_weight, output_spec, self.effect_ratio, self.backward_dtype,
                          self.name)

    def extra_repr(self) -> str:
        extra = f", lateral_inhibition={self.lateral_strength}" if self.lateral_strength is not None else ""
        return f"{self.in_features} -> {self.out_features}, v_th={self.params.v_th}{extra}, output={self.output}"


def linear_stack_forward(layers: list[SpikingLinear], x: Tensor, labels: Tensor | None,
                         recorded: list[Tensor] | None) -> Tensor | None:
    """Run consecutive HM2-BP ``SpikingLinear`` layers as one autograd node, with compact spikes between
    them (``SpikingLinearStackFunction``), or return None when their input takes the dense path (not on
    the CPU with the compiled kernels, not float32, dense or graded spikes): the caller then runs the
    layers one by one. Same spikes and gradients either way."""
    first = layers[0]
    _check_input(x, 3, first.name, (first.in_features,))
    weights = [layer.weight for layer in layers]
    x = x.to(first.weight.dtype) if x.is_floating_point() else x
    events = input_events(x, first.weight, first.name, *weights[1:])
    if events is None:
        return None
    specs = tuple(layer.spec(labels if i == len(layers) - 1 else None) for i, layer in enumerate(layers))
    keep = torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights))
    return SpikingLinearStackFunction.apply(x, events, specs, keep, recorded, *weights)


class SpikingConv2d(nn.Module):
    """Spiking convolution layer, valid padding, stride 1, no kernel flip (docs/algorithm.md §1.2 CONVSPIKING).

    Drive at output (k, x, y): Σ_{c,i,j} s_c(x+i, y+j)·W[k, c, i, j] (cross-correlation, as
    ``torch.nn.functional.conv2d``), integrated one step later by the LIF neurons of docs/algorithm.md §1.1. The
    backward pass is the conv rule of docs/algorithm.md §3.5 (weight gradient summed over positions, side effect σ
    per position, error sent down with the effect ratio r).

    Args:
        in_channels, out_channels: C and K. kernel_size: k (square kernels).
        neuron: a ``NeuronParams``, or the threshold ν (also ``v_th=``) with ``tau_m``, ``tau_s``, ``t_ref``,
            ``theta_eps`` (unset: 64, 8, 2 and 0, the spike test of conv layers being ``v > ν``, docs/algorithm.md §1.1).
        init_scale: weights start as U(−init_scale, init_scale) (0.5 in the paper's CNN, docs/algorithm.md §4.5).
        backward_dtype: dtype of the S-PSP contractions in the backward pass.
        rule: "hm2bp" (this backward pass) or "bptt" (surrogate-gradient BPTT on the same neuron).

    Shapes: input ``[T, B, C, H, W]`` → output spikes ``[T, B, K, H−k+1, W−k+1]``; ``weight`` is
    ``[K, C, k, k]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        neuron: NeuronParams | float | None = None,
        *,
        v_th: float | None = None,
        tau_m: float | None = None,
        tau_s: float | None = None,
        t_ref: int | None = None,
        theta_eps: float | None = None,
        init_scale: float = 0.5,
        backward_dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
        rule: str = "hm2bp",
    ) -> None:
        super().__init__()
        self.learning_rule = learning_rule(rule)
        self.rule = rule
        if min(in_channels, out_channels, kernel_size) < 1:
            raise ConfigError("SpikingConv2d: channels and kernel size must be positive")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.params = neuron_params(neuron, v_th, tau_m, tau_s, t_ref, theta_eps, 0.0, "SpikingConv2d")
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(_uniform_(torch.empty(shape), init_scale, generator))
        self.backward_dtype = backward_dtype
        self.name = "SpikingConv2d"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[2] != self.in_channels or min(x.shape[-2:]) < self.kernel_size:
            raise ValueError(
                f"SpikingConv2d: expected [T, B, {self.in_channels}, H, W] with H, W >= {self.kernel_size}, "
                f"got {list(x.shape)}"
            )
        return self.learning_rule.conv(self, x.to(self.weight.dtype))

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, kernel_size={self.kernel_size}, v_th={self.params.v_th}"


class SpikingPool2d(nn.Module):
    """Spiking pooling: LIF neurons with fixed unit weights over non-overlapping p×p windows.

    Drive of pool neuron (c, x, y): the number of input spikes in window [x·p, x·p+p) × [y·p, y·p+p),
    clipped to the map; the neurons have the layer's own threshold ν. No trainable parameters; in the
    backward pass each input position gets δ_pool/p²·r, without a division by ν (docs/algorithm.md §3.5).

    Args:
        pool: the window size p. neuron: a ``NeuronParams``, or the threshold ν (also ``v_th=``) with
            ``tau_m``, ``tau_s``, ``t_ref``, ``theta_eps`` (unset: 64, 8, 2, 1e-6).

    Shapes: ``[T, B, C, H, W]`` → ``[T, B, C, ceil(H/p), ceil(W/p)]`` (docs/algorithm.md §1.2 POOLINGSPIKING).
    """

    def __init__(
        self,
        pool: int,
        neuron: NeuronParams | float | None = None,
        *,
        v_th: float | None = None,
        tau_m: float | None = None,
        tau_s: float | None = None,
        t_ref: int | None = None,
        theta_eps: float | None = None,
        backward_dtype: torch.dtype = torch.float32,
        rule: str = "hm2bp",
    ) -> None:
        super().__init__()
        self.learning_rule = learning_rule(rule)
        self.rule = rule
        if pool < 1:
            raise ConfigError(f"SpikingPool2d: pool size must be positive, got {pool}")
        self.pool = pool
        self.params = neuron_params(neuron, v_th, tau_m, tau_s, t_ref, theta_eps, 1e-6, "SpikingPool2d")
        self.backward_dtype = backward_dtype
        self.name = "SpikingPool2d"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"SpikingPool2d: expected [T, B, C, H, W], got {list(x.shape)}")
        return self.learning_rule.pool(self, x)

    def extra_repr(self) -> str:
        return f"pool={self.pool}, v_th={self.params.v_th}"


def conv_stack_forward(layers: list[SpikingConv2d | SpikingPool2d], x: Tensor, recorded: list[Tensor] | None
                       ) -> Tensor | None:
    """Run consecutive HM2-BP conv/pool layers on ``x`` ``[T, B, C, H, W]`` as one event-driven autograd node
    (``functional/conv_events.py``), or return None when their input takes the dense path (not on the CPU,
    not float32, no compiler, graded spikes): the caller then runs the layers one by one. ``recorded`` (a
    list, or None) receives every layer's spikes. Same spikes either way."""
    if x.dim() != 5:
        return None
    specs = []
    C, H, W = x.shape[2:]
    for layer in layers:
        if isinstance(layer, SpikingConv2d):
            if C != layer.in_channels or min(H, W) < layer.kernel_size:
                return None  # the layer's own forward reports the shape
            g = conv_events.conv_geometry(C, H, W, layer.out_channels, layer.kernel_size)
        else:
            g = conv_events.pool_geometry(C, H, W, layer.pool)
        specs.append(conv_events.ConvLayerSpec(isinstance(layer, SpikingConv2d), g, layer.params, layer.name))
        C, H, W = g.K, g.Ho, g.Wo
    weights = [layer.weight for layer in layers if isinstance(layer, SpikingConv2d)]
    x = x.to(torch.float32) if x.is_floating_point() else x
    return conv_events.stack_forward(tuple(specs), weights, x, recorded)


class Reservoir(nn.Module):
    """Fixed recurrent spiking layer ("reservoir", docs/algorithm.md §1.2): not trained, not back-propagated through.

    The drive is ``input_weight · s_in(t)`` plus ``recurrent_weight · s(t)`` of the layer's own spikes,
    both integrated one step later (docs/algorithm.md §1.1). The output carries no gradient.

    Args:
        input_weight: ``[N, N_in]`` fixed input weights; recurrent_weight: ``[N, N]`` fixed w_rec[post, pre].
        neuron: a ``NeuronParams``, or the threshold ν (also ``v_th=``) with ``tau_m``, ``tau_s``, ``t_ref``,
            ``theta_eps`` (docs/algorithm.md §1.1; unset: 64, 8, 2, 1e-6).

    Shapes: input ``[T, B, N_in]`` → output spikes ``[T, B, N]``.
    """

    input_weight: Tensor  # buffers
    recurrent_weight: Tensor

    def __init__(self, input_weight: Tensor, recurrent_weight: Tensor, neuron: NeuronParams | float | None = None,
                 *, v_th: float | None = None, tau_m: float | None = None, tau_s: float | None = None,
                 t_ref: int | None = None, theta_eps: float | None = None) -> None:
        super().__init__()
        n = input_weight.shape[0]
        if recurrent_weight.shape != (n, n):
            raise ConfigError(f"Reservoir: recurrent weights must be [{n}, {n}], got {list(recurrent_weight.shape)}")
        self.register_buffer("input_weight", input_weight.detach().clone().float())
        self.register_buffer("recurrent_weight", recurrent_weight.detach().clone().float())
        self.params = neuron_params(neuron, v_th, tau_m, tau_s, t_ref, theta_eps, 1e-6, "Reservoir")

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, 3, "Reservoir", (self.input_weight.shape[1],))
        with torch.no_grad():
            x = x.to(self.input_weight.dtype)
            return simulate_lif(linear_drive(x, self.input_weight), self.params, self.recurrent_weight)


class Flatten(nn.Module):
    """``[T, B, C, H, W]`` → ``[T, B, C·H·W]`` with the channel-major order c·(H·W) + x·W + y (docs/algorithm.md §1.2)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], x.shape[1], -1)


__all__ = ["Flatten", "Reservoir", "SpikingConv2d", "SpikingLinear", "SpikingPool2d", "conv_drive"]
