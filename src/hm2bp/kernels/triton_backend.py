"""The Triton backend: fused time loops on CUDA tensors (``triton_kernels.py``, registered as torch operators in
``triton_ops.py``); torch's matmul and conv (cuBLAS, cuDNN) keep the dense products. On CPU tensors it serves
only under ``TRITON_INTERPRET=1``, Triton's interpreter, which is how CI proves it against the torch twin."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .torch_backend import TorchBackend

if TYPE_CHECKING:
    from ..functional.params import NeuronParams

_DTYPES = (torch.float32, torch.float64)


def serves_device(device: str) -> str | None:
    """None when the Triton kernels can take ``device`` tensors, else why not (in words)."""
    if device == "cuda":
        return None
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"the Triton kernels take CUDA tensors ({device} tensors only under TRITON_INTERPRET=1)"


@lru_cache(maxsize=64)
def _consts(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Kernel constants as a tensor of the compute dtype (rounded as torch rounds a Python scalar), made once."""
    return torch.tensor(values, dtype=dtype, device=device)


class TritonBackend(TorchBackend):
    """Triton kernels for the LIF scan (with or without a small lateral coupling) and the S-PSP coefficients;
    float32/float64 only, everything else from the torch twin."""

    name = "triton"

    def __init__(self, ops: Any) -> None:
        self._ops = ops

    def lif_scan(self, drive: Tensor, p: NeuronParams, lateral: Tensor | None) -> Tensor:
        if drive.dtype not in _DTYPES or (lateral is not None and lateral.shape[0] > self._ops.MAX_LATERAL):
            return super().lif_scan(drive, p, lateral)
        theta = p.threshold32 if drive.dtype == torch.float32 else float(p.v_th) - float(p.theta_eps)
        consts = _consts((float(p.tau_m), float(p.tau_s), theta), drive.dtype, drive.device)
        T = drive.shape[0]
        if lateral is None:
            out = self._ops.lif_scan(drive.reshape(T, -1).contiguous(), consts, int(p.t_ref))
        else:
            flat = drive.reshape(T, drive.shape[1], -1).contiguous()
            out = self._ops.lif_scan_lateral(flat, lateral.to(drive.dtype).contiguous(), consts, int(p.t_ref))
        return out.reshape(drive.shape)

    def psp_coefficients(self, post_spikes: Tensor, p: NeuronParams, dtype: torch.dtype) -> Tensor:
        if dtype not in _DTYPES:
            return super().psp_coefficients(post_spikes, p, dtype)
        tau_m, tau_s = float(p.tau_m), float(p.tau_s)
        values = (tau_m, tau_s, 1.0 / (1.0 - tau_s / tau_m), math.exp(-1.0 / tau_m), math.exp(-1.0 / tau_s))
        spikes = post_spikes.contiguous()
        if spikes.dtype == torch.bool:
            spikes = spikes.view(torch.uint8)
        return self._ops.psp_coefficients(spikes, _consts(values, dtype, spikes.device), int(p.t_ref), p.psp_window)


def load_triton_backend() -> TritonBackend:
    """The Triton backend; ImportError (in words) when triton is not installed."""
    try:
        from . import triton_ops
    except ImportError as exc:
        raise ImportError(f"triton is not installed ({exc}); pip install 'hm2bp[gpu]'") from None
    return TritonBackend(triton_ops)
