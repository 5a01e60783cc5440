"""The event-driven path of a fully connected layer (docs/algorithm.md §8.1, §8.3).

A fully connected layer needs three products with its input spikes S ``[T·B, N_in]``: the forward drive
W·s(t), the weight gradient Σ_t C̃(t)ᵀ s(t) and the error term Σ_t s(t) ⊙ (C̃(t)·W). Each costs
(number of spikes) × N_out when only the spikes are visited, against T·B·N_in·N_out for a dense GEMM;
MNIST inputs fire in 1–3 % of the (step, pixel) slots. On the CPU the compiled kernels visit the spikes,
one block of output neurons per thread at a time (its slice of Wᵀ and of the gradient stay in the cache),
and fuse the rest: the drive goes straight into the LIF scan, and C̃ is rebuilt per sample and block from
the compact output spikes and contracted on the fly. A training step therefore
never holds a float ``[T, B, N]`` drive or C̃ tensor; what it keeps for the backward pass is one byte per
(sample × step × output neuron) plus four bytes per input spike. Elsewhere (GPU, no compiler, dense or
graded spikes: the backend's ``spike_index`` says None) ``hm2bp.py`` uses dense matmuls instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import NumericalError
from ..kernels.backend import Backend, NonFiniteInput, SpikeIndex, backend_for
from .params import NeuronParams
from .psp import SILENT_POST_PSP

MAX_EVENT_DENSITY = float(os.environ.get("HM2BP_MAX_EVENT_DENSITY", "0.15"))
"""Above this fraction of 1s the dense GEMM is cheaper than visiting the spikes."""


class SpikeEvents(NamedTuple):
    """The spikes of a ``[T, B, N]`` train as a CSR index over rows r = t·B + b, and the backend that made it
    (which runs every event product on it)."""

    row_ptr: Tensor
    """``[T·B + 1]`` int64 offsets into ``cols``."""
    cols: Tensor
    """``[number of spikes]`` int32 neuron index of every spike, row by row."""
    steps: int
    batch: int
    counts: Tensor
    """``[B, N]`` spike counts per sample and neuron."""
    backend: Backend

    @property
    def csr(self) -> SpikeIndex:
        return SpikeIndex(self.row_ptr, self.cols, self.counts)


def spike_events(spikes: Tensor, max_density: float = MAX_EVENT_DENSITY, weights: Sequence[Tensor] = ()
                 ) -> SpikeEvents | None:
    """Index the spikes for the event-driven kernels, or None when the dense path is the better choice: the
    backend for ``spikes`` and the ``weights`` that will read them has no event path for the weights' dtype
    (float32 when none are given), more than ``max_density`` of the entries are ones, or some value is not
    0 or 1.

    Raises:
        NumericalError: the spikes contain NaN or inf.
    """
    backend = backend_for(spikes, *weights)
    dtypes = {w.dtype for w in weights} or {torch.float32}
    if spikes.dim() != 3 or len(dtypes) != 1 or not backend.takes_events(dtypes.pop()):
        return None
    T, B, N = spikes.shape
    try:
        index = backend.spike_index(spikes.reshape(T * B, N), B, max_density)
    except NonFiniteInput as exc:
        raise NumericalError(str(exc)) from None
    return None if index is None else SpikeEvents(index.row_ptr, index.cols, T, B, index.counts, backend)


class KeptForward(NamedTuple):
    """What the event forward keeps of an FC layer for its backward pass."""

    spikes: Tensor
    """``[T, B, N_out]`` uint8 output spikes (one byte per sample × step × neuron)."""
    counts: Tensor
    """``[B, N_out]`` int32 spike counts."""
    psp_drive: Tensor
    """``[B, N_out]`` float64 σ numerator Σ_l w_il e_{i|l} = Σ_t C̃_i(t)·(W s(t))_i, from the drive."""


def forward(events: SpikeEvents, weight: Tensor, p: NeuronParams, lateral: Tensor | None, keep: bool,
            float_out: bool = True) -> tuple[Tensor, KeptForward | None]:
    """LIF spikes of an FC layer driven by ``events`` (docs/algorithm.md §1.1; the same spikes as the LIF scan of the
    drive summed spike by spike).

    Returns:
        spikes ``[T, B, N_out]`` (float32, or uint8 without ``float_out``), and with ``keep`` what the
        backward pass needs (its ``spikes`` is then the returned tensor when that is uint8).
    """
    out, kept = events.backend.fc_forward(events.csr, weight, events.steps, events.batch, p, lateral, keep, float_out)
    return out, None if kept is None else KeptForward(*kept)


def psp_drive(out_spikes: Tensor, events: SpikeEvents, weight: Tensor, p: NeuronParams) -> Tensor:
    """Σ_t C̃_i(t)·(W s(t))_i ``[B, N_out]`` in the dtype of ``weight`` = W, for post spikes that differ
    from the forward's (the output layer after spike insertion)."""
    return events.backend.fc_psp_drive(out_spikes, events.csr, weight, p)


def linear_backward(out_spikes: Tensor, events: SpikeEvents, weight: Tensor, delta: Tensor, psp_drive: Tensor,
                    lateral: Tensor | None, p: NeuronParams, below: str | None, counts_out: Tensor | None = None
                    ) -> tuple[Tensor, Tensor | None]:
    """The HM2-BP backward step of an FC layer from its input events, in one compiled pass: (weight
    gradient ``[N_out, N_in]``, error below ``[B, N_in]`` or None), in the dtype of ``weight`` = W. The rules
    are those of ``hm2bp.linear_backward`` (its dense path is the pure-torch copy); ``below`` is None,
    "plain" or "effect_ratio"; ``counts_out`` are the spike counts of ``out_spikes`` when known (the forward's)."""
    return events.backend.fc_backward(out_spikes, events.csr, weight, delta, psp_drive, lateral, p, below,
                                      SILENT_POST_PSP, counts_out)
