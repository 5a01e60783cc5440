"""``torch.autograd.Function`` wrappers: exact spiking forward, HM2-BP backward.

The Functions only run the forward simulation, save what the backward needs and call the pure rules
of ``hm2bp.py``; the maths lives there. See ``hm2bp.py`` for the count-gradient convention.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..errors import LateralGainWarning, NumericalError
from ..kernels.backend import NonFiniteInput
from . import events as ev
from .hm2bp import (
    conv_backward,
    linear_backward,
    output_rules,
    pool_backward,
)
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


def all_finite(t: Tensor) -> bool:
    """No NaN or inf in ``t``. One reduction first (NaN/inf propagate into the sum); only a sum that is
    not finite, which may also be an overflow of finite values, pays for the elementwise test."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_finite(in_spikes: Tensor | None, weight: Tensor | None, name: str) -> None:
    """Refuse NaN/inf inputs or weights up front: a NaN potential never crosses the threshold, so the
    fault would otherwise vanish silently into a silent neuron."""
    # 0/1 spikes cannot overflow their sum, so for them the sum alone decides.
    if weight is not None and not all_finite(weight):
        raise NumericalError(f"{name}: the weights contain NaN or inf")
    if in_spikes is not None and not bool(torch.isfinite(in_spikes.sum())):
        bad = ~torch.isfinite(in_spikes.reshape(in_spikes.shape[0], -1))
        steps = torch.nonzero(bad.any(1)).flatten()
        raise NumericalError(f"{name}: the input spikes contain NaN or inf (time steps {steps[:5].tolist()})")


def warn_unstable_lateral(lam: Tensor, name: str) -> None:
    """docs/algorithm.md §3.4 has no guard for a loop gain ≥ 1 (Λ ≤ 0 or infinite); report which samples hit it."""
    bad = ~torch.isfinite(lam) | (lam <= 0)
    if bool(bad.any()):
        samples = torch.nonzero(bad.any(1)).flatten().tolist()
        warnings.warn(
            f"{name}: output lateral-inhibition loop gain >= 1 in batch samples {samples[:8]} "
            f"(Λ = {lam[bad][:4].tolist()}); the update follows the authors' unguarded formula",
            LateralGainWarning, stacklevel=4,
        )


class OutputSpec(NamedTuple):
    """What the output layer's backward rules need besides the spikes (docs/algorithm.md §3.2, §3.4)."""

    labels: Tensor | None
    """int64 ``[B]`` true classes; None = no output rules (inference)."""
    lateral_strength: float
    """w0 of the fixed lateral inhibition (0 without it)."""
    desired: int
    """DESIRED_LEVEL, which sets the spacing of the inserted spikes."""


class LinearSpec(NamedTuple):
    """The non-tensor settings of one spiking FC layer, as its autograd Functions need them."""

    p: NeuronParams
    lateral_weight: Tensor | None
    output_spec: OutputSpec | None
    """set for an output layer, else None."""
    effect_ratio: bool
    backward_dtype: torch.dtype
    name: str


def _linear_step_backward(
    delta: Tensor, weight: Tensor, out: Tensor, spec: LinearSpec, need_below: bool, *,
    events: ev.SpikeEvents | None = None, counts_out: Tensor | None = None, psp_drive: Tensor | None = None,
    in_spikes: Tensor | None = None, drive: Tensor | None = None,
) -> tuple[Tensor | None, Tensor]:
    """(δ below in ``weight.dtype`` or None, weight gradient) of one FC layer from what its forward kept;
    the output layer's spike insertion (§3.2) and lateral factor (§3.4) are applied here."""
    lam = None
    used_spikes = out
    if spec.output_spec is not None:
        labels, strength, desired = spec.output_spec
        if labels is None:  # running on without them would silently skip spike insertion and Λ
            raise ValueError(f"{spec.name}: the output layer's backward pass needs the labels (spike insertion and "
                             "the lateral factor, docs/algorithm.md §3.2/§3.4): call net(x, labels) for training; net(x) is for "
                             "inference (under torch.no_grad())")
        rules = output_rules(out, labels, spec.p, strength if spec.lateral_weight is not None else None, desired)
        lam, used_spikes = rules.lateral, rules.spikes
        if rules.unstable:
            assert lam is not None
            warn_unstable_lateral(lam, spec.name)
        if rules.inserted:
            counts_out = psp_drive = None  # σ must see the inserted spikes: recomputed
    grads = linear_backward(
        delta, in_spikes, used_spikes, weight, drive, spec.p, lateral=lam, effect_ratio=spec.effect_ratio,
        need_delta_below=need_below, dtype=spec.backward_dtype, events=events, psp_drive=psp_drive,
        counts_out=counts_out,
    )
    below = grads.delta_below.to(weight.dtype) if grads.delta_below is not None else None
    return below, grads.weight.to(weight.dtype)


def _event_forward(events: ev.SpikeEvents, weight: Tensor, spec: LinearSpec, keep: bool, float_out: bool = True
                   ) -> tuple[Tensor, ev.KeptForward | None]:
    """``events.forward`` with NaN/inf weights reported as a NumericalError naming the layer (the kernel
    checks W as it reads it: no extra pass over the weights)."""
    try:
        return ev.forward(events, weight, spec.p, spec.lateral_weight, keep, float_out)
    except NonFiniteInput:
        raise NumericalError(f"{spec.name}: the weights contain NaN or inf") from None


def input_events(in_spikes: Tensor, weight: Tensor, name: str, *more_weights: Tensor) -> ev.SpikeEvents | None:
    """The event index of a layer's input (or of a chain's, whose further weights are ``more_weights``), or
    None for the dense path (the backend for these tensors has no event path for their dtype, or the input is
    dense or graded). NaN/inf input → NumericalError naming the layer."""
    try:
        return ev.spike_events(in_spikes, weights=(weight, *more_weights))
    except NumericalError:
        check_finite(in_spikes, None, name)  # names the layer and the time steps
        raise


class SpikingLinearFunction(torch.autograd.Function):
    """Spiking FC layer: forward = LIF simulation, backward = HM2-BP (docs/algorithm.md §3.3, §3.2, §3.4)."""

    @staticmethod
    def forward(ctx: Any, in_spikes: Tensor, weight: Tensor, spec: LinearSpec, keep: bool = True
                ) -> Tensor:
        """``keep`` = False (no gradient wanted) skips everything the backward pass would need."""
        events = input_events(in_spikes, weight, spec.name)
        ctx.spec, ctx.events = spec, events
        if events is not None:
            # Event path: the drive never exists as a tensor; the backward needs only the spike index,
            # the weights, the compact output spikes, their counts and σ's numerator (formed from the drive).
            out, kept = _event_forward(events, weight, spec, keep)
            if kept is not None:
                ctx.save_for_backward(weight, *kept)
            return out
        check_finite(in_spikes, weight, spec.name)
        drive = linear_drive(in_spikes, weight)
        out = simulate_lif(drive, spec.p, spec.lateral_weight)
        if keep:
            ctx.save_for_backward(weight, out, in_spikes, drive)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Any:
        if ctx.events is not None:
            weight, out, counts_out, psp_drive = ctx.saved_tensors
            kept = dict(events=ctx.events, counts_out=counts_out, psp_drive=psp_drive)
        else:
            weight, out, in_spikes, drive = ctx.saved_tensors
            kept = dict(in_spikes=in_spikes, drive=drive)
        below, grad_w = _linear_step_backward(count_error(grad_out), weight, out, ctx.spec, ctx.needs_input_grad[0], **kept)
        grad_in = None if below is None else below.unsqueeze(0).expand(out.shape[0], *below.shape)
        return grad_in, grad_w, None, None


class SpikingLinearStackFunction(torch.autograd.Function):
    """A chain of event-driven FC layers as one autograd node (same spikes and gradients as the layers
    one by one). Between the layers the spikes exist only as one byte per (sample × step × neuron) and
    as the next layer's spike index, never as a float tensor: that is most of a training step's memory
    and allocation time at long windows."""

    @staticmethod
    def forward(ctx: Any, in_spikes: Tensor, events: ev.SpikeEvents, specs: tuple[LinearSpec, ...],
                keep: bool, recorded: list[Tensor] | None, *weights: Tensor) -> Tensor:
        """``events`` indexes ``in_spikes``; ``recorded`` (a list, or None) receives every layer's spikes
        as float tensors."""
        saved: list[Tensor] = []
        ctx.specs, ctx.events = specs, []
        out = in_spikes
        for i, (weight, spec) in enumerate(zip(weights, specs)):
            last = i == len(weights) - 1
            ctx.events.append(events)
            out, kept = _event_forward(events, weight, spec, keep, float_out=last)
            if kept is not None:
                saved += kept
            if recorded is not None:
                recorded.append(out if last else out.to(weight.dtype))
            if not last:
                nxt = ev.spike_events(out, max_density=1.0)
                assert nxt is not None  # uint8 spikes: always indexable
                events = nxt
        ctx.n_layers = len(weights)
        if keep:
            ctx.save_for_backward(*weights, *saved)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Any:
        n = ctx.n_layers
        weights, kept = ctx.saved_tensors[:n], ctx.saved_tensors[n:]
        grads: list[Tensor | None] = [None] * n
        delta: Tensor | None = count_error(grad_out)
        for i in reversed(range(n)):
            assert delta is not None
            out, counts_out, psp_drive = kept[3 * i: 3 * i + 3]
            need_below = i > 0 or ctx.needs_input_grad[0]
            delta, grads[i] = _linear_step_backward(delta, weights[i], out, ctx.specs[i], need_below, events=ctx.events[i],
                                                    counts_out=counts_out, psp_drive=psp_drive)
        grad_in = None
        if delta is not None and ctx.needs_input_grad[0]:
            grad_in = delta.unsqueeze(0).expand(grad_out.shape[0], *delta.shape)
        return (grad_in, None, None, None, None, *grads)


class SpikingConv2dFunction(torch.autograd.Function):
    """Spiking conv layer (valid, stride 1): forward = LIF simulation, backward = HM2-BP (docs/algorithm.md §3.5)."""

    @staticmethod
    def forward(ctx: Any, in_spikes: Tensor, weight: Tensor, p: NeuronParams, backward_dtype: torch.dtype,
                name: str = "SpikingConv2d") -> Tensor:
        check_finite(in_spikes, weight, name)
        drive = conv_drive(in_spikes, weight)
        out = simulate_lif(drive, p)
        ctx.save_for_backward(in_spikes, weight, drive, out)
        ctx.p, ctx.dtype = p, backward_dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Any:
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
    """Spiking pooling layer with fixed unit weights; its backward is docs/algorithm.md §3.5's pool rule."""

    @staticmethod
    def forward(ctx: Any, in_spikes: Tensor, pool: int, p: NeuronParams, backward_dtype: torch.dtype,
                name: str = "SpikingPool2d") -> Tensor:
        out = simulate_lif(pool_drive(in_spikes, pool), p)
        ctx.save_for_backward(in_spikes, out)
        ctx.pool, ctx.p, ctx.dtype = pool, p, backward_dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Any:
        in_spikes, out = ctx.saved_tensors
        delta = pool_backward(count_error(grad_out), in_spikes, out, ctx.pool, ctx.p, ctx.dtype)
        return broadcast_error(delta, in_spikes.shape[0], in_spikes), None, None, None, None
