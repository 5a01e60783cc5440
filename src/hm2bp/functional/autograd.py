"""``torch.autograd.Function`` wrappers: exact spiking forward, HM2-BP backward.

The Functions only run the forward simulation, save what the backward needs and call the pure rules
of ``hm2bp.py``; the maths lives there. See ``hm2bp.py`` for the count-gradient convention.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..errors import LateralGainWarning, NumericalError
from . import events as ev
from .hm2bp import conv_backward, insert_label_spikes, lateral_factor, linear_backward, pool_backward
from .neuron import simulate_lif
from .params import NeuronParams


def count_error(grad_spikes: Tensor) -> Tensor:
    """δ = dL/do from the gradient of a spike train: its time-average.

    Autograd hands ``spikes.sum(0)``'s gradient over as one value broadcast over time (stride 0); then
    the value itself is taken, which avoids any rounding of the average.
    """
    if grad_spikes.stride(0) == 0:
        return grad_spikes[0]
    return grad_spikes.mean(0)


def broadcast_error(delta: Tensor, T: int, like: Tensor) -> Tensor:
    """The error of the layer below, returned as the same value at every step (see count_error)."""
    return delta.to(like.dtype).unsqueeze(0).expand(T, *delta.shape)


def linear_drive(in_spikes: Tensor, weight: Tensor) -> Tensor:
    """Drive W·s(t) of a fully connected layer for every step: one GEMM over (T·B) rows."""
    return in_spikes @ weight.t()


def conv_drive(in_spikes: Tensor, weight: Tensor) -> Tensor:
    """Drive of a valid, stride-1 conv layer for every step: one conv2d over (T·B) images."""
    T, B = in_spikes.shape[:2]
    out = F.conv2d(in_spikes.reshape(T * B, *in_spikes.shape[2:]), weight)
    return out.reshape(T, B, *out.shape[1:])


def pool_drive(in_spikes: Tensor, pool: int) -> Tensor:
    """Number of input spikes in each non-overlapping pool×pool window, windows clipped to the map."""
    H, W = in_spikes.shape[-2:]
    Hp, Wp = -(-H // pool), -(-W // pool)
    padded = F.pad(in_spikes, (0, Wp * pool - W, 0, Hp * pool - H))
    return padded.reshape(*padded.shape[:-2], Hp, pool, Wp, pool).sum((-3, -1))


def check_finite(in_spikes: Tensor, weight: Tensor | None, name: str) -> None:
    """Refuse NaN/inf inputs or weights up front: a NaN potential never crosses the threshold, so the
    fault would otherwise vanish silently into a silent neuron."""
    # One reduction each: NaN/inf propagate into the sum (0/1 spikes cannot overflow it).
    if weight is not None and not bool(torch.isfinite(weight.sum())) and not bool(torch.isfinite(weight).all()):
        raise NumericalError(f"{name}: the weights contain NaN or inf")
    if not bool(torch.isfinite(in_spikes.sum())):
        bad = ~torch.isfinite(in_spikes.reshape(in_spikes.shape[0], -1))
        steps = torch.nonzero(bad.any(1)).flatten()
        raise NumericalError(f"{name}: the input spikes contain NaN or inf (time steps {steps[:5].tolist()})")


def warn_unstable_lateral(lam: Tensor, name: str) -> None:
    """Spec §3.4 has no guard for a loop gain ≥ 1 (Λ ≤ 0 or infinite); report which samples hit it."""
    bad = ~torch.isfinite(lam) | (lam <= 0)
    if bool(bad.any()):
        samples = torch.nonzero(bad.any(1)).flatten().tolist()
        warnings.warn(
            f"{name}: output lateral-inhibition loop gain >= 1 in batch samples {samples[:8]} "
            f"(Λ = {lam[bad][:4].tolist()}); the update follows the authors' unguarded formula",
            LateralGainWarning, stacklevel=4,
        )


class SpikingLinearFunction(torch.autograd.Function):
    """Spiking FC layer: forward = LIF simulation, backward = HM2-BP (spec §3.3, §3.2, §3.4)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        in_spikes: Tensor,
        weight: Tensor,
        p: NeuronParams,
        lateral_weight: Tensor | None,
        output_spec: tuple[Tensor | None, float, int] | None,
        effect_ratio: bool,
        backward_dtype: torch.dtype,
        name: str = "SpikingLinear",
    ) -> Tensor:
        check_finite(in_spikes, weight, name)
        events = ev.spike_events(in_spikes)
        drive = ev.drive(in_spikes, weight, events)
        out = simulate_lif(drive, p, lateral_weight)
        ctx.name = name
        if events is not None:
            # Event path: the backward needs only the spike index, the weights and compact output
            # spikes; the dense input and the drive are rebuilt from the index where needed.
            ctx.save_for_backward(weight, out.to(torch.bool))
        else:
            ctx.save_for_backward(weight, out, in_spikes, drive)
        ctx.events = events
        ctx.p, ctx.output_spec, ctx.effect_ratio, ctx.dtype = p, output_spec, effect_ratio, backward_dtype
        ctx.has_lateral = lateral_weight is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor):  # type: ignore[no-untyped-def,override]
        weight, out, *dense = ctx.saved_tensors
        in_spikes, drive = dense if dense else (None, None)
        delta = count_error(grad_out)
        lam = None
        used_spikes = out
        if ctx.output_spec is not None:
            labels, strength, desired = ctx.output_spec
            if labels is not None:
                if ctx.has_lateral:
                    lam = lateral_factor(out, labels, ctx.p, strength)
                    warn_unstable_lateral(lam, ctx.name)
                used_spikes = insert_label_spikes(out, labels, desired)
        grads = linear_backward(
            delta, in_spikes, used_spikes, weight, drive, ctx.p,
            lateral=lam, effect_ratio=ctx.effect_ratio,
            need_delta_below=ctx.needs_input_grad[0], dtype=ctx.dtype, events=ctx.events,
        )
        grad_in = None
        if grads.delta_below is not None:
            grad_in = grads.delta_below.to(weight.dtype).unsqueeze(0).expand(out.shape[0], *grads.delta_below.shape)
        return grad_in, grads.weight.to(weight.dtype), None, None, None, None, None, None, None


class SpikingConv2dFunction(torch.autograd.Function):
    """Spiking conv layer (valid, stride 1): forward = LIF simulation, backward = HM2-BP (spec §3.5)."""

    @staticmethod
    def forward(ctx: Any, in_spikes: Tensor, weight: Tensor, p: NeuronParams, backward_dtype: torch.dtype,  # type: ignore[override]
                name: str = "SpikingConv2d") -> Tensor:
        check_finite(in_spikes, weight, name)
        drive = conv_drive(in_spikes, weight)
        out = simulate_lif(drive, p)
        ctx.save_for_backward(in_spikes, weight, drive, out)
        ctx.p, ctx.dtype = p, backward_dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor):  # type: ignore[no-untyped-def,override]
        in_spikes, weight, drive, out = ctx.saved_tensors
        grads = conv_backward(
            count_error(grad_out), in_spikes, out, weight, drive, ctx.p,
            need_delta_below=ctx.needs_input_grad[0], dtype=ctx.dtype,
        )
        grad_in = None
        if grads.delta_below is not None:
            grad_in = broadcast_error(grads.delta_below, in_spikes.shape[0], in_spikes)
        return grad_in, grads.weight.to(weight.dtype), None, None, None


class SpikingPool2dFunction(torch.autograd.Function):
    """Spiking pooling layer with fixed unit weights; its backward is spec §3.5's pool rule."""

    @staticmethod
    def forward(ctx: Any, in_spikes: Tensor, pool: int, p: NeuronParams, backward_dtype: torch.dtype,  # type: ignore[override]
                name: str = "SpikingPool2d") -> Tensor:
        out = simulate_lif(pool_drive(in_spikes, pool), p)
        ctx.save_for_backward(in_spikes, out)
        ctx.pool, ctx.p, ctx.dtype = pool, p, backward_dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor):  # type: ignore[no-untyped-def,override]
        in_spikes, out = ctx.saved_tensors
        delta = pool_backward(count_error(grad_out), in_spikes, out, ctx.pool, ctx.p, ctx.dtype)
        return broadcast_error(delta, in_spikes.shape[0], in_spikes), None, None, None, None
