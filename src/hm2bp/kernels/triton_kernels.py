"""The Triton kernels of the ``triton`` backend (imported only when that backend loads: importing this module
imports triton, and ``TRITON_INTERPRET=1`` must be set before it for the kernels to run on CPU tensors).

Each kernel keeps one column (one neuron of one sample) per lane and walks the time axis inside the kernel, so
a whole window costs one launch instead of ~15 small torch launches per step. The float operations and their
order are those of ``torch_backend.py`` (divisions rounded as IEEE divisions, ``div_rn``), which is what makes
the LIF spikes bit-identical to the torch twin. Constants arrive as a small tensor of the compute dtype, so a
τ that float32 cannot hold exactly is rounded the way torch rounds it. Integers are int64 and pointers advance by
increments: besides avoiding overflow at large T·M, that keeps the interpreter from checking every int32
operation for overflow (which made it ~5x slower).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _div(a, b):
    """a / b rounded as an IEEE division (Triton's float32 ``/`` on CUDA is approximate)."""
    if a.dtype == tl.float32:
        return tl.math.div_rn(a, b)
    else:
        return a / b


@triton.jit
def _lif_step(v, x, r, cur, tau_m, tau_s, theta, t_ref):
    """One step of docs/algorithm.md §1.1 in the order of ``torch_backend.lif_step``; returns (v, x, r, fired)."""
    v = v - _div(v, tau_m)
    x = x - _div(x, tau_s)
    x = x + cur
    v = v + _div(x, tau_s)
    clamped = r > 0
    v = tl.where(clamped, 0.0, v)
    r = r - clamped.to(tl.int64)
    fired = v > theta
    r = tl.where(fired, t_ref, r)
    v = tl.where(fired, 0.0, v)
    return v, x, r, fired


@triton.jit
def lif_scan_kernel(drive, out, consts, T, M, t_ref, BLOCK: tl.constexpr):
    """docs/algorithm.md §1.1 for ``M`` independent neurons: ``drive``/``out`` ``[T, M]`` row-major; consts = (τ_m, τ_s, θ)."""
    cols = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < M
    tau_m = tl.load(consts)
    tau_s = tl.load(consts + 1)
    theta = tl.load(consts + 2)
    t_ref64 = tl.full([BLOCK], t_ref, dtype=tl.int64)
    v = tl.zeros([BLOCK], dtype=tau_m.dtype)
    x = tl.zeros([BLOCK], dtype=tau_m.dtype)
    r = tl.zeros([BLOCK], dtype=tl.int64)
    src = drive + cols
    dst = out + cols
    tl.store(dst, v, mask=mask)  # no spike at t = 0
    for _ in range(1, T):
        cur = tl.load(src, mask=mask, other=0.0)
        v, x, r, fired = _lif_step(v, x, r, cur, tau_m, tau_s, theta, t_ref64)
        dst += M
        src += M
        tl.store(dst, fired.to(v.dtype), mask=mask)


@triton.jit
def lif_scan_lateral_kernel(drive, lateral, out, consts, T, B, N, t_ref, BLOCK_B: tl.constexpr,
                            BLOCK_N: tl.constexpr):
    """The LIF scan of ``BLOCK_B`` samples (one program) whose ``N`` neurons are coupled through ``lateral``
    ``[N, N]`` (w[i, l]) on the previous step's spikes: current_i = drive_i + Σ_l w[i, l]·s_l(t−1).
    ``drive``/``out`` are ``[T, B, N]``."""
    samples = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    rows = tl.arange(0, BLOCK_N)
    in_n = rows < N
    mask = (samples < B)[:, None] & in_n[None, :]
    tau_m = tl.load(consts)
    tau_s = tl.load(consts + 1)
    theta = tl.load(consts + 2)
    t_ref64 = tl.full([BLOCK_B, BLOCK_N], t_ref, dtype=tl.int64)
    w_rows = lateral + rows * N  # w[i, ·]
    v = tl.zeros([BLOCK_B, BLOCK_N], dtype=tau_m.dtype)
    x = tl.zeros([BLOCK_B, BLOCK_N], dtype=tau_m.dtype)
    prev = tl.zeros([BLOCK_B, BLOCK_N], dtype=tau_m.dtype)
    r = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.int64)
    offsets = samples[:, None] * N + rows[None, :]
    src = drive + offsets
    dst = out + offsets
    step = B * N
    tl.store(dst, v, mask=mask)
    for _ in range(1, T):
        # [b, i] = Σ_l w[i, l]·s[b, l] summed in the order l = 0, 1, …, as the C kernel and torch's matmul
        # do at these sizes: with graded weights a tree reduction would round differently.
        lat = tl.zeros([BLOCK_B, BLOCK_N], dtype=tau_m.dtype)
        for l in range(N):
            s_l = tl.sum(tl.where(rows[None, :] == l, prev, 0.0), axis=1)
            w_l = tl.load(w_rows + l, mask=in_n, other=0.0)
            lat = lat + w_l[None, :] * s_l[:, None]
        cur = tl.load(src, mask=mask, other=0.0) + lat
        v, x, r, fired = _lif_step(v, x, r, cur, tau_m, tau_s, theta, t_ref64)
        prev = tl.where(mask, fired.to(v.dtype), 0.0)
        src += step
        dst += step
        tl.store(dst, prev, mask=mask)


@triton.jit
def _add_at(plane, row, M, value, mask):
    """plane[row, col] += value for the lanes in ``mask`` (``plane`` already offset by the lanes' columns; each
    lane owns its column, so there is no race)."""
    ptr = plane + row * M
    tl.store(ptr, tl.load(ptr, mask=mask, other=0.0) + value, mask=mask)


@triton.jit
def psp_coefficients_kernel(spikes, coef_m, coef_s, consts, T, M, t_ref, window, BLOCK: tl.constexpr):
    """C̃ of ``functional/psp.py`` for ``M`` post neurons: ``spikes`` ``[T, M]`` (0/1, any dtype), ``coef_m`` and
    ``coef_s`` ``[T, M]`` zero-filled; on return ``coef_m`` holds C̃. consts = (τ_m, τ_s, c, d_m, d_s) with
    c = 1/(1 − τ_s/τ_m) and d_x = exp(−1/τ_x).

    A forward pass over t scatters each post spike's few coefficients (cases A and B of ``psp.py``) into the
    rows they belong to; a backward pass filters them, C̃(t) = Σ_x Σ_{t' ≥ t} d_x^{t'−t} C_x[t'], and leaves
    exact zeros outside the windows (as ``torch_backend._reverse_filter`` and the C kernels do)."""
    cols = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < M
    tau_m = tl.load(consts)
    tau_s = tl.load(consts + 1)
    c = tl.load(consts + 2)
    M64 = tl.full([BLOCK], M, dtype=tl.int64)
    plane_m = coef_m + cols
    plane_s = coef_s + cols
    src = spikes + cols
    prev = tl.full([BLOCK], -1, dtype=tl.int64)
    t = tl.zeros([BLOCK], dtype=tl.int64)
    for _ in range(T):
        spk = mask & (tl.load(src, mask=mask, other=0) != 0)
        if tl.sum(spk.to(tl.int32), axis=0) > 0:  # most steps of most blocks have no spike
            has_prev = prev >= 0
            a = t - t_ref
            lo = tl.maximum(t - window, 1)
            a0 = tl.where(has_prev, tl.maximum(prev, lo), lo)
            in_a = spk & (a >= a0)
            span = (a - a0 + 1).to(tau_m.dtype)
            _add_at(plane_m, a, M64, c, in_a)
            _add_at(plane_m, a0 - 1, M64, -c * tl.exp(_div(-span, tau_m)), in_a)
            _add_at(plane_s, a, M64, -c, in_a)
            _add_at(plane_s, a0 - 1, M64, c * tl.exp(_div(-span, tau_s)), in_a)
            b_hi = tl.minimum(prev - 1, a)
            in_b = spk & has_prev & (b_hi >= lo)
            s_k = (t - prev - t_ref).to(tau_m.dtype)
            eps_s = c * (tl.exp(_div(-s_k, tau_m)) - tl.exp(_div(-s_k, tau_s)))
            _add_at(plane_s, b_hi, M64, eps_s * tl.exp(_div(-(prev - b_hi).to(tau_m.dtype), tau_s)), in_b)
            _add_at(plane_s, lo - 1, M64, -eps_s * tl.exp(_div(-(prev - lo + 1).to(tau_m.dtype), tau_s)), in_b)
            prev = tl.where(spk, t, prev)
        t += 1
        src += M
    tl.debug_barrier()
    d_m = tl.load(consts + 3)
    d_s = tl.load(consts + 4)
    acc_m = tl.zeros([BLOCK], dtype=tau_m.dtype)
    acc_s = tl.zeros([BLOCK], dtype=tau_m.dtype)
    # Outside every window [max(1, t_k − window), t_k − T_ref] C̃ is exactly 0 (docs/algorithm.md §2); the cancelling
    # coefficients would leave rounding residuals there, so the accumulators are reset. Walking t down, the
    # window of the spike at t + T_ref opens, and the last one opened reaches lowest: one bound per column.
    bound = tl.full([BLOCK], T, dtype=tl.int64)
    t = tl.full([BLOCK], T - 1, dtype=tl.int64)
    plane_m += (T - 1) * M64
    plane_s += (T - 1) * M64
    opening = spikes + cols + (T - 1 + t_ref) * M64
    for _ in range(T):
        opens = mask & (t + t_ref < T) & (tl.load(opening, mask=mask & (t + t_ref < T), other=0) != 0)
        bound = tl.where(opens, tl.maximum(t + t_ref - window, 1), bound)
        cover = t >= bound
        acc_m = tl.where(cover, acc_m * d_m + tl.load(plane_m, mask=mask, other=0.0), 0.0)
        acc_s = tl.where(cover, acc_s * d_s + tl.load(plane_s, mask=mask, other=0.0), 0.0)
        tl.store(plane_m, acc_m + acc_s, mask=mask)
        plane_m -= M64
        plane_s -= M64
        opening -= M64
        t -= 1


@triton.jit
def output_rules_kernel(used, labels, counts, e, lam, flags, consts, T, B, N, step, HAS_LATERAL: tl.constexpr,
                        BLOCK_N: tl.constexpr):
    """docs/algorithm.md §3.2 and §3.4 for sample b (one program), as ``torch_backend`` does them. ``used`` ``[T, B, N]`` (a copy
    of the spikes) gets, for a silent label neuron, spikes at t = step, 2·step, … < T; with ``HAS_LATERAL``,
    ``lam`` ``[B, N]`` float64 gets Λ_j = 1/(1 − w0²·Σ_{l≠j} R_jl d_l R_lj d_j) from ``counts`` ``[B, N]`` and
    e[b, j, l] = e_{l|j} ``[B, N, N]`` (float64, of the spikes before insertion; a batched matmul makes it).
    ``flags[b]`` = (inserted, unstable), or (−1, 0) for a label outside [0, N). consts = (ν, w0) float64."""
    b = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, BLOCK_N)
    in_n = rows < N
    v_th = tl.load(consts)
    w0 = tl.load(consts + 1)
    label = tl.load(labels + b)
    valid = (label >= 0) & (label < N)
    f = tl.load(counts + b * N + rows, mask=in_n, other=0.0)
    silent = tl.sum(tl.where(rows == label, f, 0.0), axis=0) == 0
    inserted = valid & silent & (step >= 1) & (step < T)
    if inserted:
        for k in range(1, tl.cdiv(T, step)):
            tl.store(used + (k * step * B + b) * N + label, tl.full([], 1, dtype=used.dtype.element_ty))
    tl.store(flags + 2 * b, tl.where(valid, inserted.to(tl.int32), -1))
    if HAS_LATERAL:
        tile = in_n[:, None] & in_n[None, :]
        ee = tl.load(e + b * N * N + rows[:, None] * N + rows[None, :], mask=tile, other=0.0)
        active = f > 0
        ratio = tl.where(active[:, None] & active[None, :], ee / tl.maximum(f, 1.0)[:, None], 1.0)
        d = tl.where(rows == label, 1.0, active.to(tl.float64)) / v_th
        terms = ratio * tl.trans(ratio) * d[None, :] * d[:, None]
        diag = tl.sum(tl.where(rows[:, None] == rows[None, :], terms, 0.0), axis=1)
        loop = tl.sum(tl.where(tile, terms, 0.0), axis=1) - diag
        value = 1.0 / (1.0 - w0 * w0 * loop)
        tl.store(lam + b * N + rows, value, mask=in_n)
        bad = in_n & ((value != value) | (tl.abs(value) == float("inf")) | (value <= 0))
        tl.store(flags + 2 * b + 1, (tl.sum(bad.to(tl.int32), axis=0) > 0).to(tl.int32))
    else:
        tl.store(flags + 2 * b + 1, tl.full([], 0, dtype=tl.int32))
