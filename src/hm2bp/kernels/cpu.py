"""The compiled CPU kernels (``cpu_scan.c``), built with the system C compiler on first use.

The shared library is cached under ``$HM2BP_CACHE`` (default ``~/.cache/hm2bp``), keyed by a hash of
the source and the compiler flags, and loaded with ``ctypes``: no Python headers, no build step at
install time. Where no compiler is available the callers fall back to the pure-torch loops (same
results, slower), and say so once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

_SOURCE = Path(__file__).with_name("cpu_scan.c")
_FLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off", "-fno-fast-math", "-std=c11", "-lm"]
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None

_i64, _i32, _f32, _f64, _ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_double, ctypes.c_void_p


def _cache_dir() -> Path:
    return Path(os.environ.get("HM2BP_CACHE", Path.home() / ".cache" / "hm2bp"))


def _build() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc/gcc) found")
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *_FLAGS]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"hm2bp_cpu_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", tmp], check=True, capture_output=True, text=True)
            os.replace(tmp, target)  # atomic: a concurrent or interrupted build never leaves a half library
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"compiling {_SOURCE.name} failed: {exc.stderr.strip()[:500]}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    lib.hm2bp_lif_scan_f32.argtypes = [_ptr, _ptr, _i64, _i64, _f32, _f32, _i32, _f32, _ptr, _i64, _i32]
    lib.hm2bp_lif_scan_f32.restype = ctypes.c_int
    for suffix in ("f32", "f64"):
        getattr(lib, f"hm2bp_event_drive_{suffix}").argtypes = [_ptr, _ptr, _ptr, _ptr, _i64, _i64, _i32]
        getattr(lib, f"hm2bp_event_outer_scaled_{suffix}").argtypes = [
            _ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, _i32]
        getattr(lib, f"hm2bp_event_dot_scaled_{suffix}").argtypes = [
            _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, _i32]
        getattr(lib, f"hm2bp_psp_coeffs_{suffix}").argtypes = [_ptr, _ptr, _i64, _i64, _f64, _f64, _i32, _i64, _i32]
        getattr(lib, f"hm2bp_psp_coeffs_{suffix}").restype = ctypes.c_int
        getattr(lib, f"hm2bp_event_sigma_{suffix}").argtypes = [_ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64, _i64, _i32]
    lib.hm2bp_spike_index.argtypes = [_ptr, _i64, _i64, _i64, _ptr, _ptr, _ptr]
    lib.hm2bp_spike_index.restype = ctypes.c_int64
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


def usable(*tensors: Tensor) -> bool:
    """True when the compiled kernels can take these tensors (CPU) and the library loads."""
    return all(t.device.type == "cpu" for t in tensors) and library() is not None


def lif_scan(drive: Tensor, tau_m: float, tau_s: float, t_ref: int, theta: float, lateral: Tensor | None) -> Tensor:
    """Spec §1.1 over ``drive`` ``[T, B, *shape]`` float32; ``lateral`` ``[N, N]`` couples the N = prod(shape)
    neurons of each sample through the previous step's spikes."""
    lib = library()
    assert lib is not None and drive.dtype == torch.float32
    T = drive.shape[0]
    d = drive.reshape(T, -1).contiguous()
    out = torch.zeros_like(d)
    n = 0
    lat_ptr = None
    if lateral is not None:
        lat = lateral.to(torch.float32).contiguous()
        n = lat.shape[0]
        lat_ptr = lat.data_ptr()
    status = lib.hm2bp_lif_scan_f32(d.data_ptr(), out.data_ptr(), T, d.shape[1], tau_m, tau_s, t_ref, theta,
                                    lat_ptr, n, torch.get_num_threads())
    if status != 0:
        raise MemoryError("hm2bp LIF kernel: out of memory for the neuron state")
    return out.reshape(drive.shape)


def _suffix(t: Tensor) -> str:
    if t.dtype == torch.float32:
        return "f32"
    if t.dtype == torch.float64:
        return "f64"
    raise TypeError(f"hm2bp event kernels take float32 or float64, got {t.dtype}")


def event_drive(row_ptr: Tensor, cols: Tensor, weight_t: Tensor, n_rows: int) -> Tensor:
    """``out[r] = Σ_{j ∈ row r} weight_t[j]`` for a CSR spike matrix; ``weight_t`` is Wᵀ ``[N_in, N_out]``."""
    lib = library()
    assert lib is not None
    wt = weight_t.contiguous()
    out = torch.zeros(n_rows, wt.shape[1], dtype=wt.dtype)
    getattr(lib, f"hm2bp_event_drive_{_suffix(wt)}")(row_ptr.data_ptr(), cols.data_ptr(), wt.data_ptr(), out.data_ptr(),
                                                     n_rows, wt.shape[1], torch.get_num_threads())
    return out


def event_outer_scaled(row_ptr: Tensor, cols: Tensor, coeffs: Tensor, scale: Tensor, n_in: int) -> Tensor:
    """``out[j] = Σ_{spikes (r, j)} coeffs[r] ⊙ scale[r mod B]``: ``[R, N_out]``, ``[B, N_out]`` → ``[N_in, N_out]``."""
    lib = library()
    assert lib is not None
    c, sc = coeffs.contiguous(), scale.to(coeffs.dtype).contiguous()
    out = torch.zeros(n_in, c.shape[1], dtype=c.dtype)
    getattr(lib, f"hm2bp_event_outer_scaled_{_suffix(c)}")(
        row_ptr.data_ptr(), cols.data_ptr(), c.data_ptr(), sc.data_ptr(), out.data_ptr(),
        c.shape[0], n_in, c.shape[1], sc.shape[0], torch.get_num_threads())
    return out


def event_dot_scaled(row_ptr: Tensor, cols: Tensor, coeffs: Tensor, scale: Tensor, weight_t: Tensor, T: int) -> Tensor:
    """``out[b, j] = Σ_{spikes (r, j), r mod B = b} Σ_i coeffs[r, i]·scale[b, i]·weight_t[j, i]``, ``[B, N_in]``."""
    lib = library()
    assert lib is not None
    c, sc, wt = coeffs.contiguous(), scale.to(coeffs.dtype).contiguous(), weight_t.to(coeffs.dtype).contiguous()
    out = torch.zeros(sc.shape[0], wt.shape[0], dtype=c.dtype)
    getattr(lib, f"hm2bp_event_dot_scaled_{_suffix(c)}")(
        row_ptr.data_ptr(), cols.data_ptr(), c.data_ptr(), sc.data_ptr(), wt.data_ptr(), out.data_ptr(),
        T, wt.shape[0], wt.shape[1], sc.shape[0], torch.get_num_threads())
    return out


def spike_index(spikes: Tensor, batch: int, max_density: float = 1.0) -> tuple[Tensor, Tensor, Tensor] | None:
    """(row_ptr, cols, counts [B, N]): the CSR index of a 0/1 matrix ``[R, N]``, or None when more than
    ``max_density`` of its entries are 1 (then dense products are cheaper)."""
    lib = library()
    assert lib is not None
    s = spikes.to(torch.float32).contiguous()
    R, N = s.shape
    row_ptr = torch.empty(R + 1, dtype=torch.int64)
    nnz = lib.hm2bp_spike_index(s.data_ptr(), R, N, batch, row_ptr.data_ptr(), None, None)
    if nnz > max_density * s.numel():
        return None
    cols = torch.empty(nnz, dtype=torch.int64)
    counts = torch.empty(batch, N, dtype=torch.int64)
    lib.hm2bp_spike_index(s.data_ptr(), R, N, batch, row_ptr.data_ptr(), cols.data_ptr(), counts.data_ptr())
    return row_ptr, cols, counts


def event_sigma(row_ptr: Tensor, cols: Tensor, coeffs: Tensor, weight_t: Tensor, T: int, batch: int) -> Tensor:
    """``out[b, i] = Σ_t coeffs[t·B + b, i] · (W s(t))_i``, the drive rebuilt from the spikes: ``[B, N_out]``."""
    lib = library()
    assert lib is not None
    c, wt = coeffs.contiguous(), weight_t.to(coeffs.dtype).contiguous()
    out = torch.zeros(batch, c.shape[1], dtype=c.dtype)
    getattr(lib, f"hm2bp_event_sigma_{_suffix(c)}")(
        row_ptr.data_ptr(), cols.data_ptr(), c.data_ptr(), wt.data_ptr(), out.data_ptr(), T, batch, c.shape[1],
        torch.get_num_threads())
    return out


def psp_coefficients(post_spikes: Tensor, tau_m: float, tau_s: float, t_ref: int, window: int, dtype: torch.dtype) -> Tensor:
    """C̃ ``[T, M]`` of ``hm2bp.functional.psp`` from 0/1 post spikes ``[T, M]`` in one compiled pass."""
    lib = library()
    assert lib is not None
    spikes = (post_spikes != 0).contiguous().view(torch.uint8)
    out = torch.empty(spikes.shape, dtype=dtype)
    suffix = "f64" if dtype == torch.float64 else "f32"
    status = getattr(lib, f"hm2bp_psp_coeffs_{suffix}")(spikes.data_ptr(), out.data_ptr(), spikes.shape[0], spikes.shape[1],
                                                       tau_m, tau_s, t_ref, window, torch.get_num_threads())
    if status != 0:
        raise MemoryError("hm2bp S-PSP kernel: out of memory")
    return out
