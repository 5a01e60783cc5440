"""Which conv/pool path serves a stack of spiking conv and pool layers: the compiled event kernels of
``cpu_conv.py`` when the seam (``backend.backend_for``) gives these tensors the CPU backend, the weights are
float32 and the kernel library loads; else None, and the layers take the dense torch path. The one place
that decides for ``functional/conv_events.py``, which calls the kernels through this module."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

from . import cpu_conv
from .backend import backend_for
from .cpu_conv import Geometry, Spikes

__all__ = ["Geometry", "Spikes", "conv_kernels"]


def conv_kernels(x: Tensor, weights: Sequence[Tensor]) -> ModuleType | None:
    """``cpu_conv`` (layer_forward, conv_backward, pool_backward) for input ``x`` and the conv ``weights``,
    or None for the dense path."""
    if any(w.dtype != torch.float32 for w in weights) or x.shape[0] == 0 or x.shape[1] == 0:
        return None
    backend = backend_for(x, *weights)
    if backend.name != "cpu" or not backend.takes_events(torch.float32) or cpu_conv.library() is None:
        return None
    return cpu_conv
