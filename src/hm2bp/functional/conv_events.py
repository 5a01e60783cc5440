"""The event-driven path of spiking conv and pool layers (docs/algorithm.md §8.1-§8.3, docs/algorithm.md §1.2 and §3.5).

A run of consecutive conv and pool layers is one autograd node (``SpikingConvStackFunction``). Between the
layers the spikes exist only as one byte per (sample × step × neuron) and as the next layer's spike index;
the drive of a layer is summed from its input spikes inside the LIF scan (``kernels/cpu_conv.c``), so no
float drive and no float spike map is formed except the last layer's output. The backward pass rebuilds
C̃ only for the neurons that fired and visits only the input spikes: the weight gradient, σ and the error
sent down are sums over spikes (in double). The rules are those of ``hm2bp.conv_backward`` and
``hm2bp.pool_backward`` (the dense torch path, used on other devices, dtypes or graded input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..errors import NumericalError
from ..kernels.backend import SpikeIndex, backend_for
from ..kernels.cpu_conv import Geometry
from . import events as ev
from .autograd import check_finite, count_error
from .params import NeuronParams
from .psp import SILENT_POST_PSP


class ConvLayerSpec(NamedTuple):
    """One conv (``conv`` True, k = kernel size) or pool (k = pool size) layer of a stack."""

    conv: bool
    geometry: Geometry
    p: NeuronParams
    name: str


def conv_geometry(C: int, H: int, W: int, K: int, k: int) -> Geometry:
    """Valid, stride-1 conv of K kernels k×k on a C×H×W map."""
    return Geometry(C, H, W, K, k, H - k + 1, W - k + 1)


def pool_geometry(C: int, H: int, W: int, p: int) -> Geometry:
    """Non-overlapping p×p pooling, windows clipped to the map (ceil(H/p) × ceil(W/p))."""
    return Geometry(C, H, W, C, p, -(-H // p), -(-W // p))


def usable(x: Tensor, weights: Sequence[Tensor]) -> bool:
    """The backend for these tensors has a conv event path for these weights (on the CPU: float32 weights and
    the compiled kernels), and the input is not empty."""
    return x.shape[0] > 0 and x.shape[1] > 0 and backend_for(x, *weights).takes_conv_events([w.dtype for w in weights])


def input_events(x: Tensor, name: str) -> ev.SpikeEvents | None:
    """The CSR index of ``[T, B, C, H, W]`` 0/1 spikes (columns c·H·W + u·W + v), or None for graded input.
    NaN/inf → NumericalError naming the layer."""
    T, B = x.shape[:2]
    flat = x.reshape(T, B, -1)
    if flat.is_floating_point():
        flat = flat.to(torch.float32)
    try:
        return ev.spike_events(flat, max_density=1.0)
    except NumericalError:
        check_finite(x, None, name)
        raise


def _layer_forward(spec: ConvLayerSpec, events: ev.SpikeEvents, weight: Tensor | None, keep: bool, float_out: bool
                   ) -> tuple[Tensor | None, Tensor, Tensor | None]:
    return events.backend.conv_layer_forward(events.csr, weight, spec.geometry, events.steps, events.batch, spec.p,
                                             keep, float_out)


def _index(u8: Tensor) -> ev.SpikeEvents:
    """The CSR index of a layer's uint8 output spikes (always indexable)."""
    T, B = u8.shape[:2]
    events = ev.spike_events(u8.reshape(T, B, -1), max_density=1.0)
    assert events is not None
    return events


def _layer_backward(spec: ConvLayerSpec, pre: ev.SpikeEvents, post: ev.SpikeEvents, counts: Tensor,
                    weight: Tensor | None, delta: Tensor, need_below: bool) -> tuple[Tensor | None, Tensor | None]:
    """(weight gradient in float64 or None for a pool layer, error below ``[B, C·H·W]`` float64 or None)."""
    return pre.backend.conv_layer_backward(SpikeIndex(post.row_ptr, post.cols, counts), pre.csr, weight, delta,
                                           spec.geometry, spec.p, need_below, SILENT_POST_PSP)


class SpikingConvStackFunction(torch.autograd.Function):
    """A chain of event-driven conv/pool layers as one autograd node: forward = the exact LIF simulation of
    docs/algorithm.md §1 (the spikes of the torch path), backward = HM2-BP's conv and pool rules (docs/algorithm.md §3.5). What it
    keeps for the backward pass is the spike index of every layer's input and output (4 bytes per spike)
    and the spike counts."""

    @staticmethod
    def forward(ctx: Any, in_spikes: Tensor, events: ev.SpikeEvents, specs: tuple[ConvLayerSpec, ...],
                keep: bool, recorded: list[Tensor] | None, *weights: Tensor) -> Tensor:
        """``events`` indexes ``in_spikes``; ``weights`` are the conv layers' in order; ``recorded`` (a list, or
        None) receives every layer's spikes as float32 tensors."""
        ctx.specs, ctx.events, ctx.in_shape = specs, [events], tuple(in_spikes.shape)
        counts: list[Tensor] = []
        remaining = list(weights)
        out: Tensor | None = None
        for i, spec in enumerate(specs):
            last = i == len(specs) - 1
            weight = remaining.pop(0) if spec.conv else None
            out, u8, cnt = _layer_forward(spec, events, weight, keep, float_out=last)
            if cnt is not None:
                counts.append(cnt)
            if recorded is not None:
                recorded.append(out if out is not None else u8.to(torch.float32))
            if not last or keep:
                events = _index(u8)  # the next layer's input, and this layer's post spikes for the backward
                ctx.events.append(events)
        if keep:
            ctx.save_for_backward(*weights, *counts)
        ctx.n_weights = len(weights)
        assert out is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Any:
        n = ctx.n_weights
        weights, counts = list(ctx.saved_tensors[:n]), ctx.saved_tensors[n:]
        B = ctx.in_shape[1]
        conv_index = [i for i, spec in enumerate(ctx.specs) if spec.conv]
        grads: list[Tensor | None] = [None] * n
        delta: Tensor | None = count_error(grad_out).reshape(B, -1)
        for i in reversed(range(len(ctx.specs))):
            spec = ctx.specs[i]
            weight = weights[conv_index.index(i)] if spec.conv else None
            need_below = i > 0 or ctx.needs_input_grad[0]
            assert delta is not None
            grad_w, delta = _layer_backward(spec, ctx.events[i], ctx.events[i + 1], counts[i], weight, delta,
                                            need_below)
            if weight is not None:
                assert grad_w is not None
                grads[conv_index.index(i)] = grad_w.to(weight.dtype)
        grad_in = None
        if delta is not None and ctx.needs_input_grad[0]:
            grad_in = delta.to(grad_out.dtype).reshape(ctx.in_shape[1:]).unsqueeze(0).expand(ctx.in_shape)
        return (grad_in, None, None, None, None, *grads)


def stack_forward(specs: tuple[ConvLayerSpec, ...], weights: Sequence[Tensor], x: Tensor, recorded: list[Tensor] | None
                  ) -> Tensor | None:
    """Run the conv/pool layers ``specs`` (conv weights in order) on ``x`` ``[T, B, C, H, W]`` on the event path,
    or return None when it does not apply (not on the CPU, not float32, no compiler, graded input): the caller
    then takes the dense torch path. Same spikes either way."""
    if not usable(x, weights):
        return None
    for spec, w in zip([s for s in specs if s.conv], weights):
        check_finite(None, w, spec.name)
    events = input_events(x, specs[0].name)
    if events is None:
        return None
    keep = torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights))
    out: Tensor = SpikingConvStackFunction.apply(x, events, specs, keep, recorded, *weights)  # type: ignore[no-untyped-call]
    return out
