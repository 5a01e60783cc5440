"""The Triton kernels registered as torch operators (``torch.library.triton_op``, namespace ``hm2bp``), with
fake-tensor implementations, so that autograd, ``torch.compile`` and the profiler see one named op each.

Imported only by ``triton_backend.load_triton_backend`` (it imports triton).
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor
from torch.library import triton_op, wrap_triton

from .triton_kernels import (
    lif_scan_kernel,
    lif_scan_lateral_kernel,
    psp_coefficients_kernel,
)

MAX_LATERAL = 64
"""Largest layer whose lateral weight tile the fused LIF kernel keeps in registers (outputs have ~10)."""


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _block(columns: int) -> int:
    """Lanes per program: 128 on a GPU; under the interpreter few wide programs (its cost is per operation)."""
    if _interpreted():
        return min(8192, triton.next_power_of_2(max(columns, 1)))
    return 128


@triton_op("hm2bp::lif_scan", mutates_args=())
def lif_scan(drive: Tensor, consts: Tensor, t_ref: int) -> Tensor:
    """Spikes ``[T, M]`` of ``M`` independent LIF neurons driven by ``drive`` ``[T, M]``; consts (τ_m, τ_s, θ)."""
    T, M = drive.shape
    out = torch.empty_like(drive)
    if T > 0 and M > 0:
        block = _block(M)
        wrap_triton(lif_scan_kernel)[(triton.cdiv(M, block),)](drive, out, consts, T, M, t_ref, BLOCK=block)
    return out


@lif_scan.register_fake
def _(drive: Tensor, consts: Tensor, t_ref: int) -> Tensor:
    return torch.empty_like(drive)


@triton_op("hm2bp::lif_scan_lateral", mutates_args=())
def lif_scan_lateral(drive: Tensor, lateral: Tensor, consts: Tensor, t_ref: int) -> Tensor:
    """Spikes ``[T, B, N]`` of ``B`` samples of ``N`` neurons coupled by ``lateral`` ``[N, N]``, N ≤ MAX_LATERAL."""
    T, B, N = drive.shape
    out = torch.empty_like(drive)
    if T > 0 and B > 0 and N > 0:
        block_n = max(16, triton.next_power_of_2(N))
        # samples per program: a few on a GPU (the [b, i, l] product lives in registers), all when interpreted
        block_b = triton.next_power_of_2(B) if _interpreted() else max(1, 2048 // (block_n * block_n))
        wrap_triton(lif_scan_lateral_kernel)[(triton.cdiv(B, block_b),)](
            drive, lateral, out, consts, T, B, N, t_ref, BLOCK_B=block_b, BLOCK_N=block_n)
    return out


@lif_scan_lateral.register_fake
def _(drive: Tensor, lateral: Tensor, consts: Tensor, t_ref: int) -> Tensor:
    return torch.empty_like(drive)


@triton_op("hm2bp::psp_coefficients", mutates_args=())
def psp_coefficients(spikes: Tensor, consts: Tensor, t_ref: int, window: int) -> Tensor:
    """C̃ ``[T, M]`` in ``consts.dtype`` of 0/1 post spikes ``[T, M]``; consts (τ_m, τ_s, c, d_m, d_s)."""
    T, M = spikes.shape
    coef = torch.zeros(T, M, dtype=consts.dtype, device=spikes.device)
    if T > 0 and M > 0:
        scratch = torch.zeros_like(coef)
        block = _block(M)
        wrap_triton(psp_coefficients_kernel)[(triton.cdiv(M, block),)](spikes, coef, scratch, consts, T, M, t_ref,
                                                                      window, BLOCK=block)
    return coef


@psp_coefficients.register_fake
def _(spikes: Tensor, consts: Tensor, t_ref: int, window: int) -> Tensor:
    return spikes.new_empty(spikes.shape, dtype=consts.dtype)
