"""The compiled CPU kernels (the C files of ``SOURCES``) and their ``ctypes`` wrappers.

The library is built with the system C compiler on first use, cached and verified by ``build.py``. Where
no compiler is available the callers fall back to the pure-torch loops (same results, slower), and say so
once. Every integer handed to C is bounded here first (``c_int``): ctypes would wrap it silently.
"""

from __future__ import annotations

import ctypes
import math
import operator
import os
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from . import build

_HERE = Path(__file__).parent
SOURCES = ["scratch.c", "psp.c", "transpose.c", "lif_scan.c", "fc_forward.c", "fc_backward.c", "output_rules.c",
           "spike_index.c", "cpu_conv.c"]
"""The C files compiled into the one kernel library (adding a kernel file is one more name here)."""
HEADERS = ["hm2bp_kernels.h", "instantiate.h", "typed.h", "psp_body.h", "transpose_body.h", "fc_backward_body.h",
           "fc_rows_body.h", "fc_block_body.h", "spike_index_body.h"]
"""The headers they include (part of the cache key)."""
# For cpu_conv.py and older callers: the build settings now live in build.py.
_FLAGS, _cache_dir, _isa_flags = build.FLAGS, build.cache_dir, build.isa_flags
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None

_i64, _i32, _f32, _f64, _ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_double, ctypes.c_void_p


class Params(ctypes.Structure):
    """``hm2bp_params`` of ``hm2bp_kernels.h`` (same fields, same order): the constants and sizes of one call,
    passed by pointer. Built by ``_params``, which bounds every integer."""

    _fields_ = [("T", _i64), ("B", _i64), ("N", _i64), ("n_in", _i64), ("tau_m", _f64), ("tau_s", _f64),
                ("v_th", _f64), ("silent_psp", _f64), ("strength", _f64), ("window", _i64), ("step", _i64),
                ("theta", _f32), ("t_ref", _i32), ("below", _i32), ("n_threads", _i32)]


class Events(ctypes.Structure):
    """``hm2bp_events``: the CSR index of a layer's input spikes (row_ptr, cols) and their counts [B, n_in]."""

    _fields_ = [("row_ptr", _ptr), ("cols", _ptr), ("counts", _ptr)]


C_INT_MAX = 2**31 - 1
"""Bound of every count, size and T_ref handed to the kernels: ctypes would silently wrap a larger Python int
(T_ref = 2**32 + 2 ran as 2; 2**31 became negative and indexed out of the buffers)."""


def c_int(name: str, value: object, low: int = 0, high: float = C_INT_MAX) -> int:
    """``value`` as an integer in [low, high] for the kernels, or a ValueError naming the parameter."""
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"hm2bp kernels: {name} must be an integer, got {value!r}") from None
    if not low <= v <= high:
        raise ValueError(f"hm2bp kernels: {name} must lie in [{low}, {high}], got {v}")
    return v


def c_window(window: object, steps: int) -> int:
    """The S-PSP window (≥ 0) for the kernels: every window ≥ T reaches back to step 1, so a larger one is
    passed as T (the same results, and no overflow of t − window)."""
    return min(c_int("window", window, high=math.inf), steps)


def _sizes(**sizes: int) -> None:
    """Every tensor size handed to the kernels fits their 32-bit indices (cols are int32)."""
    for name, v in sizes.items():
        c_int(name, v)


def _shape(name: str, t: Tensor | None, shape: tuple[int, ...]) -> None:
    if t is not None and tuple(t.shape) != shape:
        raise ValueError(f"hm2bp kernels: {name} must have shape {list(shape)}, got {list(t.shape)}")


def _check_index(row_ptr: Tensor, cols: Tensor, T: int, batch: int) -> None:
    """The CSR spike index matches T·B rows (the kernels read row_ptr[0 … T·B])."""
    if (row_ptr.dtype != torch.int64 or cols.dtype != torch.int32 or row_ptr.dim() != 1 or cols.dim() != 1
            or row_ptr.numel() != T * batch + 1):
        raise ValueError(f"hm2bp kernels: the spike index must be row_ptr int64 [T·B + 1 = {T * batch + 1}] and "
                         f"cols int32, got {row_ptr.dtype} {list(row_ptr.shape)} and {cols.dtype} {list(cols.shape)}")


def _params(T: int, B: int = 0, N: int = 0, n_in: int = 0, *, tau_m: float = 0.0, tau_s: float = 0.0,
            t_ref: int = 0, window: int = 0, theta: float = 0.0, v_th: float = 0.0, silent_psp: float = 0.0,
            strength: float = 0.0, step: int = 0, below: int = 0) -> Params:
    """The parameter struct of one call, every integer bounded (``c_int``; the window passed as ≤ T)."""
    _sizes(T=T, batch=B, neurons=N, inputs=n_in)
    return Params(T, B, N, n_in, float(tau_m), float(tau_s), float(v_th), float(silent_psp), float(strength),
                  c_window(window, T), c_int("step", step), float(theta), c_int("t_ref", t_ref), below,
                  c_int("threads", torch.get_num_threads(), low=1))


def _events(row_ptr: Tensor, cols: Tensor, counts: Tensor | None = None) -> Events:
    return Events(row_ptr.data_ptr(), cols.data_ptr(), None if counts is None else counts.data_ptr())


def _ptr_of(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _build() -> ctypes.CDLL:
    lib = build.load("hm2bp_cpu", [_HERE / name for name in SOURCES], [_HERE / name for name in HEADERS])
    params, events = ctypes.POINTER(Params), ctypes.POINTER(Events)
    signatures: dict[str, tuple[list[type], type | None]] = {
        "hm2bp_lif_scan_f32": ([params, _ptr, _ptr, _ptr], ctypes.c_int),
        "hm2bp_fc_forward_f32": ([params, events, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr], ctypes.c_int),
        "hm2bp_output_rules": ([params, _ptr, _ptr, _ptr, _ptr, _ptr], ctypes.c_int),
        "hm2bp_release_scratch": ([_i32], None),
        "hm2bp_spike_index_take": ([_ptr, _ptr, _ptr], None),
    }
    for suffix in ("f32", "f64"):
        signatures[f"hm2bp_psp_coeffs_{suffix}"] = ([params, _ptr, _ptr], ctypes.c_int)
        signatures[f"hm2bp_fc_psp_drive_{suffix}"] = ([params, events, _ptr, _ptr, _ptr], ctypes.c_int)
        signatures[f"hm2bp_fc_backward_{suffix}"] = ([params, events, *[_ptr] * 8], ctypes.c_int)
    for suffix in ("f32", "u8"):
        signatures[f"hm2bp_spike_index_{suffix}"] = ([params, _ptr, _ptr, _ptr, _i64, ctypes.POINTER(_ptr)],
                                                     ctypes.c_int64)
    for name, (argtypes, restype) in signatures.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = restype
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (compiled kernels disabled or unavailable)."""
    global _lib, _failed
    if os.environ.get("HM2BP_BACKEND", "").lower() == "torch":
        return None
    if _lib is not None or _failed is not None:
        return _lib
    with _lock:
        if _lib is None and _failed is None:
            try:
                _lib = _build()
            except (RuntimeError, OSError) as exc:
                _failed = str(exc)
                warnings.warn(f"hm2bp: compiled CPU kernels unavailable ({exc}); using the slower torch loops",
                              RuntimeWarning, stacklevel=3)
    return _lib


def release_scratch() -> None:
    """Free the kernels' per-thread scratch memory. Each thread keeps the largest region any call needed
    (a few MB at long windows), so that the next call does not fault its pages in again; call this after
    a large run when the memory is wanted back."""
    if _lib is not None:
        _lib.hm2bp_release_scratch(max(torch.get_num_threads(), os.cpu_count() or 1))


def usable(*tensors: Tensor) -> bool:
    """True when the compiled kernels can take these tensors (CPU) and the library loads."""
    return all(t.device.type == "cpu" for t in tensors) and library() is not None


def lif_scan(drive: Tensor, tau_m: float, tau_s: float, t_ref: int, theta: float, lateral: Tensor | None) -> Tensor:
    """docs/algorithm.md §1.1 over ``drive`` ``[T, B, *shape]`` float32; ``lateral`` ``[N, N]`` couples the N = prod(shape)
    neurons of each sample through the previous step's spikes."""
    lib = library()
    assert lib is not None and drive.dtype == torch.float32
    T = drive.shape[0]
    B, n = (drive.shape[1], math.prod(drive.shape[2:])) if drive.dim() > 1 else (0, 0)
    p = _params(T, B, n, tau_m=tau_m, tau_s=tau_s, t_ref=t_ref, theta=theta)
    d = drive.reshape(T, -1).contiguous()
    out = torch.zeros_like(d)
    lat = None
    if lateral is not None:
        lat = lateral.to(torch.float32).contiguous()
        _shape("lateral", lat, (n, n))
    status = lib.hm2bp_lif_scan_f32(ctypes.byref(p), d.data_ptr(), out.data_ptr(), _ptr_of(lat))
    if status != 0:
        _check(status, "LIF")
    return out.reshape(drive.shape)


def _suffix(t: Tensor) -> str:
    if t.dtype == torch.float32:
        return "f32"
    if t.dtype == torch.float64:
        return "f64"
    raise TypeError(f"hm2bp event kernels take float32 or float64, got {t.dtype}")


def _check(status: int, what: str) -> None:
    if status == -5:  # HM2BP_BAD_PARAMS: the checks above make this unreachable
        raise ValueError(f"hm2bp {what} kernel: sizes or constants out of range")
    if status != 0:
        raise MemoryError(f"hm2bp {what} kernel: out of memory for its per-thread buffers")


def _as_u8(spikes: Tensor) -> Tensor:
    """0/1 bytes of a spike tensor, without a copy when it already is uint8 (0/1) or bool."""
    if spikes.dtype == torch.uint8:
        return spikes.contiguous()
    if spikes.dtype == torch.bool:
        return spikes.contiguous().view(torch.uint8)
    return (spikes != 0).contiguous().view(torch.uint8)


class NonFiniteSpikes(ValueError):
    """``spike_index`` found NaN or inf in a spike matrix."""


class NonFiniteWeights(ValueError):
    """``fc_forward`` found NaN or inf in the weights."""


def spike_index(spikes: Tensor, batch: int, max_density: float = 1.0) -> tuple[Tensor, Tensor, Tensor] | None:
    """(row_ptr int64 [R+1], cols int32 [nnz], counts int64 [B, N]): the CSR index of a 0/1 matrix
    ``[R, N]`` (rows r = t·B + b), or None when more than ``max_density`` of its entries are 1 (dense
    products are then cheaper) or when it holds values other than 0 and 1 (graded input). Raises
    ``NonFiniteSpikes`` for NaN/inf. uint8/bool spikes are read as they are (any nonzero byte is a spike)."""
    lib = library()
    assert lib is not None
    if spikes.dtype in (torch.uint8, torch.bool):
        s, kernel = _as_u8(spikes), lib.hm2bp_spike_index_u8
    else:
        s, kernel = spikes.to(torch.float32).contiguous(), lib.hm2bp_spike_index_f32
    R, N = s.shape
    c_int("batch", batch)
    if (batch < 1 and R > 0) or (batch > 0 and R % batch):
        raise ValueError(f"hm2bp kernels: {R} spike rows are not T·B rows of batch {batch}")
    p = _params(R // batch if batch > 0 else 0, batch, N)
    row_ptr = torch.empty(R + 1, dtype=torch.int64)
    counts = torch.empty(batch, N, dtype=torch.int64)
    handle = ctypes.c_void_p()
    # One pass over the spikes: the kernel keeps the column indices in per-thread buffers (handle) until
    # cols, whose size it returns, exists; an input with more than max_nnz spikes is given up early.
    max_nnz = int(max_density * s.numel()) if max_density < 1.0 else -1
    nnz = kernel(ctypes.byref(p), s.data_ptr(), row_ptr.data_ptr(), counts.data_ptr(), max_nnz, ctypes.byref(handle))
    if nnz == -1:
        raise NonFiniteSpikes("the spikes contain NaN or inf")
    if nnz in (-2, -4):
        return None
    if nnz < 0:
        _check(int(nnz), "spike index")
    cols = torch.empty(nnz, dtype=torch.int32)
    lib.hm2bp_spike_index_take(handle, row_ptr.data_ptr(), cols.data_ptr())
    return row_ptr, cols, counts


def fc_forward(row_ptr: Tensor, cols: Tensor, weight: Tensor, T: int, batch: int, tau_m: float, tau_s: float,
               t_ref: int, theta: float, lateral: Tensor | None, window: int, keep: bool, float_out: bool = True
               ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
    """Event-driven forward of an FC layer (drive fused into the LIF scan): spikes ``[T, B, N]`` (float32,
    or uint8 without ``float_out``), and with ``keep`` (their uint8 copy, counts ``[B, N]`` int32, σ's
    numerator Σ_l w_il e_{i|l} ``[B, N]`` float64). Raises ``NonFiniteWeights`` for NaN/inf weights."""
    lib = library()
    assert lib is not None and weight.dtype == torch.float32
    w = weight.contiguous()
    n, n_in = w.shape
    p = _params(T, batch, n, n_in, tau_m=tau_m, tau_s=tau_s, t_ref=t_ref, window=window, theta=theta)
    _check_index(row_ptr, cols, T, batch)
    _shape("lateral", lateral, (n, n))
    out = torch.empty(T, batch, n, dtype=torch.float32) if float_out else None
    out_u8 = torch.empty(T, batch, n, dtype=torch.uint8) if keep or not float_out else None
    counts = torch.empty(batch, n, dtype=torch.int32) if keep else None
    psp_drive = torch.empty(batch, n, dtype=torch.float64) if keep else None
    lat = lateral.to(torch.float32).contiguous() if lateral is not None else None
    ev = _events(row_ptr, cols)
    status = lib.hm2bp_fc_forward_f32(ctypes.byref(p), ctypes.byref(ev), w.data_ptr(), _ptr_of(lat), _ptr_of(out),
                                      _ptr_of(out_u8), _ptr_of(counts), _ptr_of(psp_drive))
    # The kernel checks W block by block as it reads it; an empty batch reads nothing.
    if status == -2 or (batch == 0 and not bool(torch.isfinite(w).all())):
        raise NonFiniteWeights("the weights contain NaN or inf")
    _check(status, "FC forward")
    spikes = out if out is not None else out_u8
    assert spikes is not None
    if not keep:
        return spikes, None
    assert out_u8 is not None and counts is not None and psp_drive is not None
    return spikes, (out_u8, counts, psp_drive)


def fc_psp_drive(post: Tensor, row_ptr: Tensor, cols: Tensor, weight: Tensor, tau_m: float, tau_s: float,
                 t_ref: int, window: int) -> Tensor:
    """``out[b, i] = Σ_t C̃_bi(t)·(W s(t))_{b,i}`` from 0/1 post spikes ``[T, B, N]``, in the dtype of
    ``weight`` = W ``[N, N_in]``."""
    lib = library()
    assert lib is not None
    T, B, n = post.shape
    u8 = _as_u8(post)
    w = weight.contiguous()
    p = _params(T, B, n, w.shape[1], tau_m=tau_m, tau_s=tau_s, t_ref=t_ref, window=window)
    _shape("weight", w, (n, w.shape[1]))
    _check_index(row_ptr, cols, T, B)
    out = torch.empty(B, n, dtype=w.dtype)
    ev = _events(row_ptr, cols)
    _check(getattr(lib, f"hm2bp_fc_psp_drive_{_suffix(w)}")(
        ctypes.byref(p), ctypes.byref(ev), u8.data_ptr(), w.data_ptr(), out.data_ptr()), "FC S-PSP drive")
    return out


def fc_backward(post: Tensor, row_ptr: Tensor, cols: Tensor, counts_in: Tensor, weight: Tensor, delta: Tensor,
                psp_drive: Tensor, lateral: Tensor | None, v_th: float, below: str | None, silent_psp: float,
                tau_m: float, tau_s: float, t_ref: int, window: int, counts_out: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
    """The HM2-BP backward step of an event-driven FC layer in one pass (``hm2bp_fc_backward`` in
    ``fc_backward_body.h``; the rules of ``functional.hm2bp.linear_backward``), C̃ rebuilt per sample from 0/1
    post spikes ``post`` ``[T, B, N]``: (weight gradient ``[N, N_in]``, error for the layer below ``[B, N_in]``
    or None), in the dtype of ``weight`` = W ``[N, N_in]``.

    Args:
        counts_in: ``[B, N_in]`` spike counts of the input. delta: ``[B, N]`` count error δ.
        psp_drive: ``[B, N]`` σ's numerator Σ_l w_il e_{i|l} of ``post``. lateral: ``[B, N]`` Λ or None.
        below: None (no error below), "plain" (δ̂·W) or "effect_ratio" (docs/algorithm.md §3.3's r = e/o_j).
        silent_psp: e for a silent post neuron and an active pre neuron (docs/algorithm.md §2).
        counts_out: ``[B, N]`` spike counts of ``post`` when known (the forward's); None: counted here.
    """
    lib = library()
    assert lib is not None
    T, B, n = post.shape
    u8 = _as_u8(post)
    w = weight.contiguous()
    n_in = w.shape[1]
    mode = {None: 0, "plain": 1, "effect_ratio": 2}[below]
    p = _params(T, B, n, n_in, tau_m=tau_m, tau_s=tau_s, t_ref=t_ref, window=window, v_th=v_th,
                silent_psp=silent_psp, below=mode)
    _check_index(row_ptr, cols, T, B)
    for name, t, shape in (("weight", w, (n, n_in)), ("counts_in", counts_in, (B, n_in)), ("delta", delta, (B, n)),
                           ("psp_drive", psp_drive, (B, n)), ("lateral", lateral, (B, n)),
                           ("counts_out", counts_out, (B, n))):
        _shape(name, t, shape)
    d = delta.to(w.dtype).contiguous()
    drive = psp_drive.to(torch.float64).contiguous()
    lam = lateral.to(torch.float64).contiguous() if lateral is not None else None
    cin = counts_in.to(torch.int64).contiguous()
    cout = counts_out.to(torch.int32).contiguous() if counts_out is not None else None
    grad = torch.empty(n, n_in, dtype=w.dtype)  # both written whole by the kernel
    out = torch.empty(B, n_in, dtype=w.dtype) if mode else None
    ev = _events(row_ptr, cols, cin)
    _check(getattr(lib, f"hm2bp_fc_backward_{_suffix(w)}")(
        ctypes.byref(p), ctypes.byref(ev), u8.data_ptr(), _ptr_of(cout), w.data_ptr(), d.data_ptr(),
        drive.data_ptr(), _ptr_of(lam), grad.data_ptr(), _ptr_of(out)), "FC backward")
    return grad, out


def output_rules(post: Tensor, labels: Tensor, step: int, v_th: float, strength: float | None, tau_m: float,
                 tau_s: float, t_ref: int, window: int) -> tuple[Tensor, Tensor | None, int, int]:
    """The output layer's spike insertion and lateral factor (``hm2bp.functional.hm2bp``) in one pass over
    0/1 post spikes ``[T, B, N]``: (spikes after insertion ``[T, B, N]`` uint8, Λ ``[B, N]`` float64 or None
    when ``strength`` is None, number of samples that got spikes inserted, number of samples with a Λ
    entry that is not finite or ≤ 0)."""
    lib = library()
    assert lib is not None
    T, B, n = post.shape
    p = _params(T, B, n, tau_m=tau_m, tau_s=tau_s, t_ref=t_ref, window=window, v_th=v_th,
                strength=0.0 if strength is None else strength, step=step)
    _shape("labels", labels, (B,))
    u8 = _as_u8(post)
    lab = labels.to(torch.int64).contiguous()
    used = torch.empty(T, B, n, dtype=torch.uint8)
    lam = torch.empty(B, n, dtype=torch.float64) if strength is not None else None
    stats = torch.zeros(2, dtype=torch.int64)
    status = lib.hm2bp_output_rules(ctypes.byref(p), u8.data_ptr(), lab.data_ptr(), used.data_ptr(), _ptr_of(lam),
                                    stats.data_ptr())
    if status == -2:
        raise ValueError(f"labels must be class indices in [0, {n}), got {labels.tolist()[:8]}")
    _check(status, "output-layer rules")
    inserted, bad = stats.tolist()
    return used, lam, inserted, bad


def psp_coefficients(post_spikes: Tensor, tau_m: float, tau_s: float, t_ref: int, window: int, dtype: torch.dtype) -> Tensor:
    """C̃ ``[T, M]`` of ``hm2bp.functional.psp`` from 0/1 post spikes ``[T, M]`` in one compiled pass."""
    lib = library()
    assert lib is not None
    spikes = _as_u8(post_spikes)
    T, M = spikes.shape
    p = _params(T, 1, M, tau_m=tau_m, tau_s=tau_s, t_ref=t_ref, window=window)
    out = torch.empty(spikes.shape, dtype=dtype)
    _check(getattr(lib, f"hm2bp_psp_coeffs_{_suffix(out)}")(ctypes.byref(p), spikes.data_ptr(), out.data_ptr()),
           "S-PSP coefficient")
    return out
