"""The compiled C kernels (``cpu.py``) behind the ``Backend`` protocol, on CPU tensors.

Only ``cpu.py``'s public functions are called; what they do not take (dtypes other than float32/float64,
inputs of another rank) the inherited torch twin serves, with the same results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from . import cpu
from .backend import NonFiniteInput, OutputRules, SpikeIndex
from .torch_backend import TorchBackend

if TYPE_CHECKING:
    from ..functional.params import NeuronParams


class CpuBackend(TorchBackend):
    """The C kernels: the LIF scan, S-PSP coefficients, output rules and the event-driven FC layer."""

    name = "cpu"

    def lif_scan(self, drive: Tensor, p: NeuronParams, lateral: Tensor | None) -> Tensor:
        if drive.dtype != torch.float32:
            return super().lif_scan(drive, p, lateral)
        return cpu.lif_scan(drive, float(p.tau_m), float(p.tau_s), int(p.t_ref), p.threshold32, lateral)

    def psp_coefficients(self, post_spikes: Tensor, p: NeuronParams, dtype: torch.dtype) -> Tensor:
        if dtype not in (torch.float32, torch.float64):
            return super().psp_coefficients(post_spikes, p, dtype)
        return cpu.psp_coefficients(post_spikes, float(p.tau_m), float(p.tau_s), int(p.t_ref), p.psp_window, dtype)

    def output_rules(self, spikes: Tensor, labels: Tensor, p: NeuronParams, strength: float | None,
                     desired: int) -> OutputRules:
        if spikes.dim() != 3:
            return super().output_rules(spikes, labels, p, strength, desired)
        used, lam, inserted, bad = cpu.output_rules(
            spikes, labels, spikes.shape[0] // desired, float(p.v_th), strength, float(p.tau_m), float(p.tau_s),
            int(p.t_ref), p.psp_window)
        return OutputRules(used if spikes.dtype == torch.uint8 else used.to(spikes.dtype), lam, inserted > 0, bad > 0)

    def takes_events(self, weight_dtype: torch.dtype) -> bool:
        return weight_dtype == torch.float32  # the event kernels reproduce the float32 spikes exactly

    def spike_index(self, spikes: Tensor, batch: int, max_density: float) -> SpikeIndex | None:
        try:
            index = cpu.spike_index(spikes, batch, max_density=max_density)
        except cpu.NonFiniteSpikes:
            raise NonFiniteInput("input spikes") from None
        return None if index is None else SpikeIndex(*index)

    def fc_forward(self, index: SpikeIndex, weight: Tensor, steps: int, batch: int, p: NeuronParams,
                   lateral: Tensor | None, keep: bool, float_out: bool
                   ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        try:
            return cpu.fc_forward(index.row_ptr, index.cols, weight.to(torch.float32), steps, batch, float(p.tau_m),
                                  float(p.tau_s), int(p.t_ref), p.threshold32, lateral, p.psp_window, keep, float_out)
        except cpu.NonFiniteWeights:
            raise NonFiniteInput("weights") from None

    def fc_psp_drive(self, post: Tensor, index: SpikeIndex, weight: Tensor, p: NeuronParams) -> Tensor:
        return cpu.fc_psp_drive(post, index.row_ptr, index.cols, weight, float(p.tau_m), float(p.tau_s), int(p.t_ref),
                                p.psp_window)

    def fc_backward(self, post: Tensor, index: SpikeIndex, weight: Tensor, delta: Tensor, psp_drive: Tensor,
                    lateral: Tensor | None, p: NeuronParams, below: str | None, silent_psp: float,
                    counts_out: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return cpu.fc_backward(post, index.row_ptr, index.cols, index.counts, weight, delta, psp_drive, lateral,
                               float(p.v_th), below, silent_psp, float(p.tau_m), float(p.tau_s), int(p.t_ref),
                               p.psp_window, counts_out)


def load_cpu_backend() -> CpuBackend:
    """The C backend, or RuntimeError saying why the kernels did not load (no compiler, a failed build)."""
    if cpu.library() is None:
        raise RuntimeError(getattr(cpu, "_failed", None) or "the compiled CPU kernels did not load")
    return CpuBackend()
