"""The compiled event-driven conv and pool kernels (``cpu_conv.c``, one of the sources of ``cpu.py``'s library).

``cpu_conv.c`` uses the helpers of ``hm2bp_kernels.h`` (the LIF step, the scratch memory, the exp table), so
it is built into the same library (``cpu.SOURCES``); this module declares its functions there. Every call
takes its geometry and neuron constants as one ``LayerArgs`` structure, whose integers are bounds-checked
here (``cpu.c_int``: ctypes would wrap them silently).
"""

from __future__ import annotations

import ctypes
import threading
from typing import NamedTuple

import torch
from torch import Tensor

from . import cpu

_lock = threading.Lock()
_declared = False  # the conv functions' ctypes signatures are set on cpu.library()
_i32, _f64, _ptr = ctypes.c_int32, ctypes.c_double, ctypes.c_void_p


class LayerArgs(ctypes.Structure):
    """``layer_args`` of ``cpu_conv.c`` (same fields, same order)."""

    _fields_ = [(name, ctypes.c_int64) for name in ("T", "B", "C", "H", "W", "K", "k", "Ho", "Wo")] + [  # type: ignore[assignment]
        ("tau_m", ctypes.c_float), ("tau_s", ctypes.c_float), ("theta", ctypes.c_float), ("t_ref", ctypes.c_int32),
        ("window", ctypes.c_int64), ("psp_tau_m", ctypes.c_double), ("psp_tau_s", ctypes.c_double),
        ("n_threads", ctypes.c_int32),
    ]


def _declare(lib: ctypes.CDLL) -> None:
    args = ctypes.POINTER(LayerArgs)
    lib.hm2bp_conv_forward_f32.argtypes = [args, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr]
    lib.hm2bp_pool_forward_f32.argtypes = [args, _ptr, _ptr, _ptr, _ptr, _ptr]
    lib.hm2bp_conv_backward.argtypes = [args, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _f64, _i32, _f64,
                                        _ptr, _ptr]
    lib.hm2bp_pool_backward.argtypes = [args, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr]
    for name in ("hm2bp_conv_forward_f32", "hm2bp_pool_forward_f32", "hm2bp_conv_backward", "hm2bp_pool_backward"):
        getattr(lib, name).restype = ctypes.c_int


def library() -> ctypes.CDLL | None:
    """The kernel library with the conv functions declared, or None (compiled kernels disabled or
    unavailable: ``cpu.library()`` has warned once why). The conv kernels are sources of that one library,
    so there is no second build or failure state here."""
    global _declared
    lib = cpu.library()
    if lib is not None and not _declared:
        with _lock:
            if not _declared:
                _declare(lib)
                _declared = True
    return lib


class Geometry(NamedTuple):
    """One conv or pool layer: input [C, H, W], output [K, Ho, Wo], kernel or pool size k."""

    C: int
    H: int
    W: int
    K: int
    k: int
    Ho: int
    Wo: int


def _args(g: Geometry, T: int, B: int, tau_m: float, tau_s: float, theta: float, t_ref: int, window: int
          ) -> LayerArgs:
    for name, v in {"T": T, "B": B, **g._asdict()}.items():
        cpu.c_int(name, v)
    cpu.c_int("inputs per sample", g.C * g.H * g.W)
    cpu.c_int("outputs per sample", g.K * g.Ho * g.Wo)
    return LayerArgs(T, B, g.C, g.H, g.W, g.K, g.k, g.Ho, g.Wo, tau_m, tau_s, theta, cpu.c_int("t_ref", t_ref),
                     cpu.c_window(window, T), tau_m, tau_s, torch.get_num_threads())


def channel_blocks(B: int, K: int) -> int:
    """``channel_blocks`` of ``cpu_conv.c``: output-channel blocks per sample."""
    nt = max(torch.get_num_threads(), 1)
    return 1 if B >= nt else min(-(-nt // B), K)


def blocked_weights(weight: Tensor, B: int, dtype: torch.dtype) -> Tensor:
    """W ``[K, C, k, k]`` as ``[n_blocks, C·k·k·kmax]``: each channel block's kernels as [C, k, k, ns] with the
    channels innermost, padded with zeros to ns = a multiple of 8 (float32, the forward) or 4 (float64, the
    backward), blocks split as ``torch.tensor_split`` does (the layout of ``cpu_conv.c``)."""
    K = weight.shape[0]
    n = channel_blocks(B, K)
    pad = 8 if dtype == torch.float32 else 4
    per_block = -(-K // n)
    kmax = -(-per_block // pad) * pad
    ckk = weight[0].numel()
    out = torch.zeros(n, ckk * kmax, dtype=dtype)
    for i, blk in enumerate(torch.tensor_split(weight.detach(), n)):
        ns = -(-blk.shape[0] // pad) * pad
        padded = torch.zeros(ckk, ns, dtype=dtype)
        padded[:, : blk.shape[0]] = blk.permute(1, 2, 3, 0).reshape(ckk, -1)
        out[i, : ckk * ns] = padded.reshape(-1)
    return out


def _check(status: int, what: str) -> None:
    if status != 0:
        raise MemoryError(f"hm2bp {what} kernel: out of memory for its buffers")


def _ptr_of(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def layer_forward(row_ptr: Tensor, cols: Tensor, weight: Tensor | None, g: Geometry, T: int, B: int,
                  tau_m: float, tau_s: float, theta: float, t_ref: int, window: int, keep: bool, float_out: bool
                  ) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """Forward of a conv layer (``weight`` float32 ``[K, C, k, k]``) or a pool layer (``weight`` None) from the
    CSR index of its input: (float32 spikes ``[T, B, K, Ho, Wo]`` when ``float_out`` else None, uint8 spikes,
    with ``keep`` the spike counts ``[B, K·Ho·Wo]`` int32)."""
    lib = library()
    assert lib is not None
    shape = (T, B, g.K, g.Ho, g.Wo)
    out = torch.empty(shape, dtype=torch.float32) if float_out else None
    u8 = torch.empty(shape, dtype=torch.uint8)
    counts = torch.empty(B, g.K * g.Ho * g.Wo, dtype=torch.int32) if keep else None
    args = _args(g, T, B, tau_m, tau_s, theta, t_ref, window)
    if weight is not None:
        wt = blocked_weights(weight, B, torch.float32)
        status = lib.hm2bp_conv_forward_f32(ctypes.byref(args), row_ptr.data_ptr(), cols.data_ptr(), wt.data_ptr(),
                                            _ptr_of(out), u8.data_ptr(), _ptr_of(counts))
    else:
        status = lib.hm2bp_pool_forward_f32(ctypes.byref(args), row_ptr.data_ptr(), cols.data_ptr(), _ptr_of(out),
                                            u8.data_ptr(), _ptr_of(counts))
    _check(status, "conv forward" if weight is not None else "pool forward")
    return out, u8, counts


class Spikes(NamedTuple):
    """A layer's spikes as the backward passes read them: the CSR index over rows t·B + b and the counts."""

    row_ptr: Tensor
    cols: Tensor
    counts: Tensor
    """``[B, N]`` (int32 for a layer's output, int64 for an input index)."""


def conv_backward(post: Spikes, pre: Spikes, weight: Tensor, delta: Tensor, g: Geometry, v_th: float,
                  need_below: bool, silent_psp: float, tau_m: float, tau_s: float, t_ref: int, window: int
                  ) -> tuple[Tensor, Tensor | None]:
    """HM2-BP backward step of a conv layer in double (``hm2bp_conv_backward``) from its output spikes
    ``post`` and input spikes ``pre``: (weight gradient ``[K, C, k, k]``, error below ``[B, C·H·W]`` or
    None), from the count error ``delta`` ``[B, K·Ho·Wo]``."""
    lib = library()
    assert lib is not None
    B = post.counts.shape[0]
    T = (post.row_ptr.shape[0] - 1) // max(B, 1)
    w64 = weight.detach().to(torch.float64)
    wt = blocked_weights(w64, B, torch.float64)
    wsum = w64.sum((1, 2, 3)).contiguous()
    d = delta.to(torch.float64).contiguous()
    cout = post.counts.to(torch.int32).contiguous()
    cin = pre.counts.to(torch.int64).contiguous()
    grad = torch.empty(weight.shape, dtype=torch.float64)
    below = torch.empty(B, g.C * g.H * g.W, dtype=torch.float64) if need_below else None
    args = _args(g, T, B, tau_m, tau_s, 0.0, t_ref, window)
    _check(lib.hm2bp_conv_backward(
        ctypes.byref(args), post.row_ptr.data_ptr(), post.cols.data_ptr(), cout.data_ptr(), pre.row_ptr.data_ptr(),
        pre.cols.data_ptr(), cin.data_ptr(), wt.data_ptr(), wsum.data_ptr(), d.data_ptr(), v_th,
        2 if need_below else 0, silent_psp, grad.data_ptr(), _ptr_of(below)), "conv backward")
    return grad, below


def pool_backward(post: Spikes, pre: Spikes, delta: Tensor, g: Geometry, tau_m: float, tau_s: float, t_ref: int,
                  window: int) -> Tensor:
    """Error through a pool layer in double (``hm2bp_pool_backward``): ``[B, C·H·W]`` from ``delta``
    ``[B, C·Ho·Wo]``."""
    lib = library()
    assert lib is not None
    B = post.counts.shape[0]
    T = (post.row_ptr.shape[0] - 1) // max(B, 1)
    d = delta.to(torch.float64).contiguous()
    cout = post.counts.to(torch.int32).contiguous()
    cin = pre.counts.to(torch.int64).contiguous()
    below = torch.empty(B, g.C * g.H * g.W, dtype=torch.float64)
    args = _args(g, T, B, tau_m, tau_s, 0.0, t_ref, window)
    _check(lib.hm2bp_pool_backward(ctypes.byref(args), post.row_ptr.data_ptr(), post.cols.data_ptr(), cout.data_ptr(),
                                   pre.row_ptr.data_ptr(), pre.cols.data_ptr(), cin.data_ptr(), d.data_ptr(),
                                   below.data_ptr()), "pool backward")
    return below
