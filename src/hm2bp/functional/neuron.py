"""The discrete-time LIF neuron of HM2-BP (docs/algorithm.md §1.1): one elementwise scan over time.

Layout: time-major. ``drive`` is ``[T, B, *shape]``; ``drive[t]`` is the synaptic input produced by the
pre-synaptic spikes of step ``t``, which the neuron integrates at step ``t + 1`` (one-step delay).
"""

from __future__ import annotations

from torch import Tensor

from ..kernels import torch_backend
from ..kernels.backend import backend_for
from .params import NeuronParams


def simulate_lif(drive: Tensor, p: NeuronParams, lateral: Tensor | None = None) -> Tensor:
    """Run the LIF neurons of one layer over the whole window.

    The update per step t = 1…T−1 follows docs/algorithm.md §1.1 in its exact order and in the dtype of ``drive``
    (float32 reproduces the authors' spikes bit for bit):
    leak ``v -= v/τ_m``, ``x -= x/τ_s``; ``x += I(t−1)``; ``v += x/τ_s``; refractory clamp; strict
    threshold test; reset to 0 and ``r = T_ref`` on a spike. No spike at t = 0.

    Args:
        drive: ``[T, B, *shape]`` feed-forward input currents, ``drive[t] = Σ_j w_ij s_j(t)``.
        p: the layer's neuron constants.
        lateral: optional ``[N, N]`` weights w_lat[i, l] (N = prod(shape)) through which the layer's own
            spikes of the previous step add Σ_l w_lat[i, l]·s_l(t−1) to the current (output lateral
            inhibition, reservoir recurrence).

    Returns:
        ``[T, B, *shape]`` spikes as 0/1 values of ``drive.dtype``.

    ``hm2bp.kernels.backend_for`` picks the implementation (the compiled C kernel on the CPU, Triton on
    CUDA, the torch loop of ``kernels/torch_backend.lif_step`` elsewhere); all run the same operations.
    """
    return backend_for(drive).lif_scan(drive, p, lateral)


def _simulate_lif_torch(drive: Tensor, p: NeuronParams, lateral: Tensor | None) -> Tensor:
    """The torch twin (``kernels/torch_backend.py``), whatever ``backend_for`` would choose."""
    return torch_backend.lif_scan(drive, p, lateral)
