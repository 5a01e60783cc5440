"""Slow, loop-based reference implementation of HM2-BP, transcribed from docs/algorithm.md.

This module is the "plain transcription" of docs/algorithm.md §8.5: one sample at a time (no batch axis),
explicit Python loops over time steps, neurons and spikes, numpy only (no torch), and no helper
shared with the fast path. Its only job is to be obviously right, so that the fast implementation
can be checked against it. It is far too slow for training.

It is the one file allowed to exceed the package's 600-line limit: the whole algorithm (forward, S-PSP,
every backward rule, the optimizer) is transcribed in one place, so that a reader can check it against
docs/algorithm.md top to bottom, and splitting it would invite shared helpers between its parts.

Conventions:
- Arrays are time-major. A spike raster is ``[T, N]`` (FC layers) or ``[T, C, H, W]`` (conv and pool
  maps), bool or 0/1. t = 0 … T−1; one step is 1 ms.
- ``W[i, j]`` is the weight from pre-synaptic neuron j to post-synaptic neuron i (w_ij of docs/algorithm.md).
- The forward pass (docs/algorithm.md §1) runs in float32 in exactly the operation order of §1.1, which is what
  reproduces the authors' spikes bit for bit. Everything in the backward pass (docs/algorithm.md §2–§4) is
  float64.
- Constants default to the paper's values τ_m = 64, τ_s = 8, T_ref = 2 (docs/algorithm.md §1.1).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "TAU_M",
    "TAU_S",
    "T_REF",
    "conv_backward_ref",
    "conv_forward_ref",
    "fc_backward_ref",
    "fc_forward_ref",
    "insert_spikes_ref",
    "lateral_factor_ref",
    "lif_forward_ref",
    "output_backward_ref",
    "output_delta_ref",
    "pool_backward_ref",
    "pool_forward_ref",
    "psp_kernel_ref",
    "psp_matrix_ref",
    "psp_pair_ref",
    "regularizer_grad_ref",
    "softmax_delta_ref",
]

TAU_M = 64.0  # membrane time constant τ_m (docs/algorithm.md §1.1)
TAU_S = 8.0  # synaptic time constant τ_s (docs/algorithm.md §1.1)
T_REF = 2  # refractory period T_ref in steps (docs/algorithm.md §1.1)


# ---------------------------------------------------------------------------------------------
# Small private helpers (plain loops; nothing here is shared with the fast path)
# ---------------------------------------------------------------------------------------------


def _times_of(train: np.ndarray) -> list[int]:
    """Spike times (ascending) of one neuron's spike train ``[T]``."""
    times = []
    for t in range(train.shape[0]):
        if train[t]:
            times.append(t)
    return times


def _count_of(train: np.ndarray) -> int:
    """Firing count o = Σ_t s(t) of one neuron's spike train ``[T]`` (docs/algorithm.md §0 notation)."""
    count = 0
    for t in range(train.shape[0]):
        if train[t]:
            count += 1
    return count


# ---------------------------------------------------------------------------------------------
# §1 Forward pass
# ---------------------------------------------------------------------------------------------


def lif_forward_ref(
    drive: np.ndarray,
    v_th: float,
    theta_eps: float,
    *,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
    lateral: np.ndarray | None = None,
) -> np.ndarray:
    """Run the discrete LIF neuron with exponential synapse of docs/algorithm.md §1.1 over a whole window.

    Args:
        drive: ``[T, N]`` feed-forward drive; ``drive[t, i]`` = Σ_j w_ij s_j(t) is computed from the
            input spikes of step t, so step t of the neuron consumes ``drive[t − 1]`` (the one-step
            synaptic delay of docs/algorithm.md §1.1 step 2).
        v_th: the layer threshold ν.
        theta_eps: θ = ν − theta_eps; 1e-6 for FC, output and pool layers, 0 for conv layers
            (docs/algorithm.md §1.1 step 6, §7.2). θ is rounded to float32 once, as a float variable would be.
        tau_m, tau_s, t_ref: τ_m, τ_s, T_ref.
        lateral: optional ``[N, N]`` matrix ``w_lat[i, l]``; adds Σ_l w_lat[i, l] s_l(t − 1) (the
            layer's own spikes of the previous step) to the drive (docs/algorithm.md §1.1 step 2, §1.2).

    Returns:
        bool ``[T, N]`` spike raster. t = 0 never spikes.

    All state is float32 and updated in exactly the spec's order: leak v, leak x, x += I,
    v += x/τ_s, refractory clamp, strict test v > θ, reset.
    """
    drive = np.asarray(drive, dtype=np.float32)
    if drive.ndim != 2:
        raise ValueError(f"drive must be [T, N], got shape {drive.shape}")
    n_steps, n_neurons = drive.shape
    lat = None
    if lateral is not None:
        lat = np.asarray(lateral, dtype=np.float32)
        if lat.shape != (n_neurons, n_neurons):
            raise ValueError(f"lateral must be [{n_neurons}, {n_neurons}], got {lat.shape}")

    f_tau_m = np.float32(tau_m)
    f_tau_s = np.float32(tau_s)
    # The threshold is a float32 variable holding ν − eps (the subtraction itself in double).
    theta = np.float32(float(np.float32(v_th)) - float(theta_eps))
    zero = np.float32(0.0)

    out = np.zeros((n_steps, n_neurons), dtype=bool)
    v = [zero] * n_neurons  # membrane potential
    x = [zero] * n_neurons  # synaptic state ("ep")
    r = [0] * n_neurons  # refractory counter
    # t = 0: all state is 0 and s(0) = 0; the leak at t = 0 has no effect, so start at t = 1.
    for t in range(1, n_steps):
        for i in range(n_neurons):
            vi = v[i]
            xi = x[i]
            # 1. leak
            vi = vi - vi / f_tau_m
            xi = xi - xi / f_tau_s
            # 2. drive from the previous step (one-step delay)
            current = drive[t - 1, i]
            if lat is not None:
                lat_sum = zero
                for l in range(n_neurons):
                    if out[t - 1, l]:
                        lat_sum = lat_sum + lat[i, l]
                current = current + lat_sum
            # 3. synapse
            xi = xi + current
            # 4. membrane
            vi = vi + xi / f_tau_s
            # 5. refractory clamp
            if r[i] > 0:
                vi = zero
                r[i] = r[i] - 1
            # 6. strict spike test, 7. reset
            if vi > theta:
                out[t, i] = True
                r[i] = t_ref
                vi = zero
            v[i] = vi
            x[i] = xi
    return out


def fc_forward_ref(
    in_spikes: np.ndarray,
    W: np.ndarray,
    v_th: float,
    theta_eps: float = 1e-6,
    lateral: np.ndarray | None = None,
    *,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
) -> np.ndarray:
    """Fully connected spiking layer (docs/algorithm.md §1.2 SPIKING, §1.1 neuron).

    Args:
        in_spikes: ``[T, N_in]`` input raster.
        W: ``[N_out, N_in]`` weights, used as float32.
        v_th: threshold ν; theta_eps: 1e-6 for FC/output layers (docs/algorithm.md §1.1 step 6).
        lateral: optional ``[N_out, N_out]`` lateral weights (output lateral inhibition: −1 off the
            diagonal, 0 on it; docs/algorithm.md §1.2).

    Returns:
        bool ``[T, N_out]``.

    The drive Σ_j w_ij s_j(t) is a float32 loop-sum over the inputs that spiked at t, in index
    order.
    """
    in_spikes = np.asarray(in_spikes)
    Wf = np.asarray(W, dtype=np.float32)
    n_steps, n_in = in_spikes.shape
    n_out = Wf.shape[0]
    if Wf.shape != (n_out, n_in):
        raise ValueError(f"W must be [N_out, {n_in}], got {Wf.shape}")
    drive = np.zeros((n_steps, n_out), dtype=np.float32)
    for t in range(n_steps):
        active = [j for j in range(n_in) if in_spikes[t, j]]
        for i in range(n_out):
            acc = np.float32(0.0)
            for j in active:
                acc = acc + Wf[i, j]
            drive[t, i] = acc
    return lif_forward_ref(
        drive, v_th, theta_eps, tau_m=tau_m, tau_s=tau_s, t_ref=t_ref, lateral=lateral
    )


def conv_forward_ref(
    in_spikes: np.ndarray,
    W: np.ndarray,
    v_th: float,
    theta_eps: float = 0.0,
    *,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
) -> np.ndarray:
    """Convolutional spiking layer (docs/algorithm.md §1.2 CONVSPIKING): valid, stride 1, no kernel flip.

    Drive at output (k, x, y) at step t = Σ_{c,i,j} s_c(t; x+i, y+j) · W[k][c][i][j] (float32
    loop-sum in (c, i, j) order), then the LIF of §1.1 with θ = ν exactly (theta_eps = 0,
    docs/algorithm.md §7.2).

    Args:
        in_spikes: ``[T, C, H, W]``; W: ``[K, C, k, k]``.

    Returns:
        bool ``[T, K, H − k + 1, W − k + 1]``.
    """
    in_spikes = np.asarray(in_spikes)
    Wf = np.asarray(W, dtype=np.float32)
    n_steps, n_c, height, width = in_spikes.shape
    n_k, wc, ksize, ksize2 = Wf.shape
    if wc != n_c or ksize != ksize2:
        raise ValueError(f"W must be [K, {n_c}, k, k], got {Wf.shape}")
    h_out = height - ksize + 1
    w_out = width - ksize + 1
    # plain nested lists make the innermost test cheap; values are unchanged
    s = in_spikes.astype(bool).tolist()
    drive = np.zeros((n_steps, n_k, h_out, w_out), dtype=np.float32)
    for t in range(n_steps):
        st = s[t]
        for k in range(n_k):
            for x in range(h_out):
                for y in range(w_out):
                    acc = np.float32(0.0)
                    for c in range(n_c):
                        for i in range(ksize):
                            for j in range(ksize):
                                if st[c][x + i][y + j]:
                                    acc = acc + Wf[k, c, i, j]
                    drive[t, k, x, y] = acc
    flat = lif_forward_ref(
        drive.reshape(n_steps, n_k * h_out * w_out),
        v_th,
        theta_eps,
        tau_m=tau_m,
        tau_s=tau_s,
        t_ref=t_ref,
    )
    return flat.reshape(n_steps, n_k, h_out, w_out)


def pool_forward_ref(
    in_spikes: np.ndarray,
    p: int,
    v_th: float,
    theta_eps: float = 1e-6,
    *,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
) -> np.ndarray:
    """Spiking pooling layer (docs/algorithm.md §1.2 POOLINGSPIKING), size = skip = p.

    Drive of pool neuron (c, x, y) at step t = number of input spikes of channel c at t in the
    window [x·p, x·p + p) × [y·p, y·p + p), clipped to the map; then the LIF of §1.1 with
    θ = ν − 1e-6.

    Returns:
        bool ``[T, C, ceil(H/p), ceil(W/p)]``.
    """
    in_spikes = np.asarray(in_spikes)
    n_steps, n_c, height, width = in_spikes.shape
    h_out = -(-height // p)
    w_out = -(-width // p)
    s = in_spikes.astype(bool).tolist()
    drive = np.zeros((n_steps, n_c, h_out, w_out), dtype=np.float32)
    for t in range(n_steps):
        for c in range(n_c):
            for x in range(h_out):
                for y in range(w_out):
                    count = 0
                    for xx in range(x * p, min(x * p + p, height)):
                        for yy in range(y * p, min(y * p + p, width)):
                            if s[t][c][xx][yy]:
                                count += 1
                    drive[t, c, x, y] = np.float32(count)
    flat = lif_forward_ref(
        drive.reshape(n_steps, n_c * h_out * w_out),
        v_th,
        theta_eps,
        tau_m=tau_m,
        tau_s=tau_s,
        t_ref=t_ref,
    )
    return flat.reshape(n_steps, n_c, h_out, w_out)


# ---------------------------------------------------------------------------------------------
# §2 Spike-train level PSP (S-PSP)
# ---------------------------------------------------------------------------------------------


def psp_kernel_ref(s: float, u: float, *, tau_m: float = TAU_M, tau_s: float = TAU_S) -> float:
    """The reset-aware kernel K(s, u) of docs/algorithm.md §2 step 3, float64.

    K(s, u) = exp(−max(u − s, 0)/τ_s) · [exp(−min(s,u)/τ_m) − exp(−min(s,u)/τ_s)] / (1 − τ_s/τ_m),
    where s is the time since the end of the last reset and u the (T_ref-shifted) time since the
    pre spike.
    """
    m = min(s, u)
    decay_after_reset = math.exp(-max(u - s, 0) / tau_s)
    return decay_after_reset * (math.exp(-m / tau_m) - math.exp(-m / tau_s)) / (1.0 - tau_s / tau_m)


def psp_pair_ref(
    post_times: list[int],
    pre_times: list[int],
    *,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
) -> float:
    """S-PSP e_{i|j} of one post/pre pair, docs/algorithm.md §2, in float64.

    Args:
        post_times: ascending spike times t_i^(k) of the post-synaptic neuron i.
        pre_times: ascending spike times t_j^(m) of the pre-synaptic neuron j.

    Steps (docs/algorithm.md §2): ŝ^(0) = 1, ŝ^(k) = t_i^(k) + T_ref; for every post spike k,
    s_k = t_i^(k) − ŝ^(k−1); every pre spike with max(1, t_i^(k) − 4τ_m) ≤ t_j^(m) and
    t_j^(m) + T_ref ≤ t_i^(k) adds K(s_k, u_km) with u_km = t_i^(k) − (t_j^(m) + T_ref).
    Special cases (docs/algorithm.md §2 step 4): a silent pre gives 0; a silent post with an active pre gives
    0.1.
    (With the window's lower bound t_j ≥ 1, u ≤ t_i^(1) − 3 < s_1, so ŝ^(0) never reaches the reset
    branch; it is kept as written.)
    """
    if len(pre_times) == 0:
        return 0.0
    if len(post_times) == 0:
        return 0.1
    e = 0.0
    reset_end = 1  # ŝ^(0)
    for t_k in post_times:
        s_k = t_k - reset_end
        lower = max(1.0, t_k - 4.0 * tau_m)
        for t_j in pre_times:
            if lower <= t_j and t_j + t_ref <= t_k:
                u_km = t_k - (t_j + t_ref)
                e += psp_kernel_ref(s_k, u_km, tau_m=tau_m, tau_s=tau_s)
        reset_end = t_k + t_ref  # ŝ^(k)
    return e


def psp_matrix_ref(
    post: np.ndarray,
    pre: np.ndarray,
    *,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
) -> np.ndarray:
    """All S-PSPs e[i, j] = e_{i|j} of a post raster ``[T, N_post]`` and a pre raster
    ``[T, N_pre]``.

    A double loop over (i, j) calling :func:`psp_pair_ref` (docs/algorithm.md §2). Returns float64
    ``[N_post, N_pre]``.
    """
    post = np.asarray(post)
    pre = np.asarray(pre)
    if post.shape[0] != pre.shape[0]:
        raise ValueError(f"post and pre must share T, got {post.shape} and {pre.shape}")
    n_post = post.shape[1]
    n_pre = pre.shape[1]
    post_times = [_times_of(post[:, i]) for i in range(n_post)]
    pre_times = [_times_of(pre[:, j]) for j in range(n_pre)]
    e = np.zeros((n_post, n_pre), dtype=np.float64)
    for i in range(n_post):
        for j in range(n_pre):
            e[i, j] = psp_pair_ref(
                post_times[i], pre_times[j], tau_m=tau_m, tau_s=tau_s, t_ref=t_ref
            )
    return e


# ---------------------------------------------------------------------------------------------
# §3.1, §3.6 Output error
# ---------------------------------------------------------------------------------------------


def output_delta_ref(
    counts: np.ndarray,
    label: int,
    *,
    desired: int = 35,
    undesired: int = 5,
    margin: int = 5,
    boost: float = 1.0,
) -> np.ndarray:
    """Rate-coded output error with a dead zone, docs/algorithm.md §3.1.

    y_i = desired for the label and undesired otherwise; δ_i = boost · (o_i − y_i) if
    |o_i − y_i| > margin (strict), else 0. ``counts`` are the raw counts, before spike insertion.
    Returns float64 ``[N]``.
    """
    counts = np.asarray(counts)
    n = counts.shape[0]
    delta = np.zeros(n, dtype=np.float64)
    for i in range(n):
        y = desired if i == label else undesired
        diff = float(counts[i]) - float(y)
        if abs(diff) > margin:
            delta[i] = boost * diff
        else:
            delta[i] = 0.0
    return delta


def softmax_delta_ref(counts: np.ndarray, label: int, boost: float = 1.0) -> np.ndarray:
    """Softmax output error, docs/algorithm.md §3.6: P = softmax(o) of the raw counts, δ = boost · (P − onehot).

    No temperature and no margin. The maximum count is subtracted before exponentiating (this
    changes nothing mathematically; it only avoids overflow). Returns float64 ``[N]``.
    """
    counts = np.asarray(counts)
    n = counts.shape[0]
    largest = max(float(counts[i]) for i in range(n))
    exps = [math.exp(float(counts[i]) - largest) for i in range(n)]
    total = 0.0
    for value in exps:
        total += value
    delta = np.zeros(n, dtype=np.float64)
    for i in range(n):
        onehot = 1.0 if i == label else 0.0
        delta[i] = boost * (exps[i] / total - onehot)
    return delta


# ---------------------------------------------------------------------------------------------
# §3.2 Silent-target spike insertion
# ---------------------------------------------------------------------------------------------


def insert_spikes_ref(out_spikes: np.ndarray, label: int, desired: int = 35) -> np.ndarray:
    """Silent-target spike insertion, docs/algorithm.md §3.2.

    If the label neuron fired 0 spikes, it gets spikes at t = Δ, 2Δ, … < T with Δ = ⌊T/desired⌋.
    Otherwise the raster is returned unchanged. Always returns a new bool ``[T, N]`` array.
    """
    new = np.array(out_spikes, dtype=bool, copy=True)
    n_steps = new.shape[0]
    if _count_of(new[:, label]) == 0:
        interval = n_steps // desired
        if interval <= 0:
            raise ValueError(f"T = {n_steps} < desired = {desired}: the insertion interval is 0")
        t = interval
        while t < n_steps:
            new[t, label] = True
            t += interval
    return new


# ---------------------------------------------------------------------------------------------
# §3.4 Lateral-inhibition factor
# ---------------------------------------------------------------------------------------------


def lateral_factor_ref(
    out_spikes: np.ndarray,
    label: int,
    v_th: float,
    w0: float = 1.0,
    *,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
) -> np.ndarray:
    """Lateral-inhibition factor Λ of the output layer, docs/algorithm.md §3.4.

    Args:
        out_spikes: ``[T, N]`` output raster **before** spike insertion (its counts are f_j).
        label: the label c. v_th: the output threshold ν. w0: the inhibition strength.

    d_j = 1/ν if f_j > 0 or j = c, else 0. For l ≠ j: R_jl = e_{l|j}/f_j and R_lj = e_{j|l}/f_l,
    both replaced by 1 when f_j = 0 or f_l = 0 (e from :func:`psp_pair_ref`, post first).
    Λ_j = 1 / (1 − w0² Σ_{l≠j} R_jl d_l R_lj d_j). There is no guard against a denominator ≤ 0
    (docs/algorithm.md §7.15); a RuntimeWarning is issued when it happens. Returns float64 ``[N]``.
    """
    out_spikes = np.asarray(out_spikes)
    n = out_spikes.shape[1]
    times = [_times_of(out_spikes[:, j]) for j in range(n)]
    f = [len(times[j]) for j in range(n)]
    d = [1.0 / v_th if (f[j] > 0 or j == label) else 0.0 for j in range(n)]
    lam = np.ones(n, dtype=np.float64)
    for j in range(n):
        loop_sum = 0.0
        for l in range(n):
            if l == j:
                continue
            if f[j] == 0 or f[l] == 0:
                r_jl = 1.0
                r_lj = 1.0
            else:
                e_l_given_j = psp_pair_ref(
                    times[l], times[j], tau_m=tau_m, tau_s=tau_s, t_ref=t_ref
                )
                e_j_given_l = psp_pair_ref(
                    times[j], times[l], tau_m=tau_m, tau_s=tau_s, t_ref=t_ref
                )
                r_jl = e_l_given_j / f[j]
                r_lj = e_j_given_l / f[l]
            loop_sum += r_jl * d[l] * r_lj * d[j]
        denominator = 1.0 - w0 * w0 * loop_sum
        if denominator <= 0.0:
            warnings.warn(
                f"lateral factor of neuron {j}: loop gain {w0 * w0 * loop_sum} >= 1",
                RuntimeWarning,
                stacklevel=2,
            )
        with np.errstate(divide="ignore"):
            lam[j] = np.float64(1.0) / np.float64(denominator)
    return lam


# ---------------------------------------------------------------------------------------------
# §3.3 FC backward step (hidden and output layers)
# ---------------------------------------------------------------------------------------------


def fc_backward_ref(
    delta: np.ndarray,
    in_spikes: np.ndarray,
    out_spikes: np.ndarray,
    W: np.ndarray,
    v_th: float,
    *,
    effect_ratio: bool = True,
    lateral_factor: np.ndarray | None = None,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
) -> tuple[np.ndarray, np.ndarray]:
    """One FC layer's backward step, docs/algorithm.md §3.3 (with §2's effect ratios), float64.

    Args:
        delta: ``[N_out]`` error δ received by this layer (from §3.1 for the output layer).
        in_spikes: ``[T, N_in]``; out_spikes: ``[T, N_out]`` — the raster the backward uses (for the
            output layer: after spike insertion). The counts o come from these rasters.
        W: ``[N_out, N_in]`` weights before this sample's update. v_th: ν.
        effect_ratio: use r_ij (True, all HM2-BP configs) or plain weights (False, TI46 test).
        lateral_factor: Λ ``[N_out]`` (§3.4), or None for 1.

    Returns:
        (grad_W ``[N_out, N_in]``, delta_below ``[N_in]``) with
        δ̂_i = δ_i/ν; σ_i = (1/ν) Σ_l w_il ρ_il, ρ_il = e_{i|l}/o_i (0.5 if o_i = 0);
        g_ij = δ̂_i e_{i|j} (1 + σ_i) Λ_i; δ_below_j = Σ_i δ̂_i w_ij r_ij with r_ij = e_{i|j}/o_j if
        o_i > 0 and o_j > 0, else 1 (r_ij = 1 everywhere when effect_ratio is False).
    """
    delta = np.asarray(delta, dtype=np.float64)
    Wd = np.asarray(W, dtype=np.float64)
    in_spikes = np.asarray(in_spikes)
    out_spikes = np.asarray(out_spikes)
    n_out, n_in = Wd.shape
    o_out = [_count_of(out_spikes[:, i]) for i in range(n_out)]
    o_in = [_count_of(in_spikes[:, j]) for j in range(n_in)]
    lam = [1.0] * n_out if lateral_factor is None else [float(v) for v in lateral_factor]

    # 1. δ̂ = δ/ν
    delta_hat = [float(delta[i]) / v_th for i in range(n_out)]
    # 2. S-PSPs
    e = psp_matrix_ref(out_spikes, in_spikes, tau_m=tau_m, tau_s=tau_s, t_ref=t_ref)
    # side effect σ_i
    sigma = [0.0] * n_out
    for i in range(n_out):
        acc = 0.0
        for l in range(n_in):
            rho = e[i, l] / o_out[i] if o_out[i] > 0 else 0.5
            acc += Wd[i, l] * rho
        sigma[i] = acc / v_th
    # 3. weight gradient
    grad = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        for j in range(n_in):
            grad[i, j] = delta_hat[i] * e[i, j] * (1.0 + sigma[i]) * lam[i]
    # 4. error to the layer below (no (1 + σ), no Λ)
    delta_below = np.zeros(n_in, dtype=np.float64)
    for j in range(n_in):
        acc = 0.0
        for i in range(n_out):
            if effect_ratio and o_out[i] > 0 and o_in[j] > 0:
                r = e[i, j] / o_in[j]
            else:
                r = 1.0
            acc += delta_hat[i] * Wd[i, j] * r
        delta_below[j] = acc
    return grad, delta_below


def output_backward_ref(
    out_spikes_raw: np.ndarray,
    in_spikes: np.ndarray,
    W: np.ndarray,
    v_th: float,
    label: int,
    *,
    loss: str = "rate",
    boost: float = 1.0,
    lateral: bool = True,
    effect_ratio: bool = True,
    desired: int = 35,
    undesired: int = 5,
    margin: int = 5,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
) -> tuple[np.ndarray, np.ndarray]:
    """The output layer's whole backward step in the order of docs/algorithm.md §3.7 (§3.1–§3.4, §3.6).

    1. δ from the **raw** counts (§3.1 rate loss with dead zone, or §3.6 softmax).
    2. Λ from the **raw** spikes (§3.4, w0 = 1), only when ``lateral`` (LOCAL_INHIBITION); else 1.
    3. Spike insertion for a silent label (§3.2, with ``desired``, also for the softmax loss).
    4. :func:`fc_backward_ref` on the modified raster (§3.3).

    Returns (grad_W ``[N_out, N_in]``, delta_below ``[N_in]``), float64.
    """
    out_spikes_raw = np.asarray(out_spikes_raw)
    n_out = out_spikes_raw.shape[1]
    counts = np.array([_count_of(out_spikes_raw[:, i]) for i in range(n_out)])
    if loss == "rate":
        delta = output_delta_ref(
            counts, label, desired=desired, undesired=undesired, margin=margin, boost=boost
        )
    elif loss == "softmax":
        delta = softmax_delta_ref(counts, label, boost=boost)
    else:
        raise ValueError(f"loss must be 'rate' or 'softmax', got {loss!r}")
    lam = None
    if lateral:
        lam = lateral_factor_ref(
            out_spikes_raw, label, v_th, 1.0, tau_m=tau_m, tau_s=tau_s, t_ref=t_ref
        )
    modified = insert_spikes_ref(out_spikes_raw, label, desired)
    return fc_backward_ref(
        delta,
        in_spikes,
        modified,
        W,
        v_th,
        effect_ratio=effect_ratio,
        lateral_factor=lam,
        tau_m=tau_m,
        tau_s=tau_s,
        t_ref=t_ref,
    )


# ---------------------------------------------------------------------------------------------
# §3.5 Conv and pool backward
# ---------------------------------------------------------------------------------------------


def conv_backward_ref(
    delta: np.ndarray,
    in_spikes: np.ndarray,
    out_spikes: np.ndarray,
    W: np.ndarray,
    v_th: float,
    *,
    need_delta_below: bool = True,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Conv layer backward step, docs/algorithm.md §3.5 (valid, stride 1), float64.

    Args:
        delta: ``[K, Ho, Wo]``; in_spikes: ``[T, C, H, W]``; out_spikes: ``[T, K, Ho, Wo]``;
        W: ``[K, C, k, k]``; v_th: ν of the conv layer.
        need_delta_below: False skips δ_below (input is the data layer).

    For output neuron (k, x, y) and input neuron (c, x+i, y+j), with e = e_{(k,x,y)|(c,x+i,y+j)}:
    δ̂ = δ/ν; σ_k(x,y) = (1/ν) Σ_{c,i,j} W[k,c,i,j] ρ (ρ = e/o_out, 0.5 if o_out = 0);
    g[k,c,i,j] = Σ_{x,y} δ̂ e (1 + σ_k(x,y)); δ_below[c, x+i, y+j] += δ̂ W[k,c,i,j] r with
    r = e/o_in if o_out > 0 and o_in > 0, else 1.

    Returns (grad_W ``[K, C, k, k]``, delta_below ``[C, H, W]`` or None).
    """
    delta = np.asarray(delta, dtype=np.float64)
    in_spikes = np.asarray(in_spikes)
    out_spikes = np.asarray(out_spikes)
    Wd = np.asarray(W, dtype=np.float64)
    n_k, n_c, ksize, _ = Wd.shape
    _, _, height, width = in_spikes.shape
    _, _, h_out, w_out = out_spikes.shape

    in_times = [
        [[_times_of(in_spikes[:, c, xx, yy]) for yy in range(width)] for xx in range(height)]
        for c in range(n_c)
    ]
    grad = np.zeros((n_k, n_c, ksize, ksize), dtype=np.float64)
    delta_below = np.zeros((n_c, height, width), dtype=np.float64) if need_delta_below else None
    for k in range(n_k):
        for x in range(h_out):
            for y in range(w_out):
                post = _times_of(out_spikes[:, k, x, y])
                o_out = len(post)
                d_hat = float(delta[k, x, y]) / v_th
                # S-PSPs of this output neuron with its C·k·k inputs
                e = np.zeros((n_c, ksize, ksize), dtype=np.float64)
                for c in range(n_c):
                    for i in range(ksize):
                        for j in range(ksize):
                            e[c, i, j] = psp_pair_ref(
                                post, in_times[c][x + i][y + j], tau_m=tau_m, tau_s=tau_s, t_ref=t_ref)
                # side effect of this output neuron
                acc = 0.0
                for c in range(n_c):
                    for i in range(ksize):
                        for j in range(ksize):
                            rho = e[c, i, j] / o_out if o_out > 0 else 0.5
                            acc += Wd[k, c, i, j] * rho
                sigma = acc / v_th
                # weight gradient (summed over positions) and error to the layer below
                for c in range(n_c):
                    for i in range(ksize):
                        for j in range(ksize):
                            grad[k, c, i, j] += d_hat * e[c, i, j] * (1.0 + sigma)
                            if delta_below is not None:
                                o_in = len(in_times[c][x + i][y + j])
                                if o_out > 0 and o_in > 0:
                                    r = e[c, i, j] / o_in
                                else:
                                    r = 1.0
                                delta_below[c, x + i, y + j] += d_hat * Wd[k, c, i, j] * r
    return grad, delta_below


def pool_backward_ref(
    delta_pool: np.ndarray,
    in_spikes: np.ndarray,
    out_spikes: np.ndarray,
    p: int,
    *,
    tau_m: float = TAU_M,
    tau_s: float = TAU_S,
    t_ref: int = T_REF,
) -> np.ndarray:
    """Pool layer backward step, docs/algorithm.md §3.5: no ν division, no side effect, no gradient.

    Each conv neuron x' in the (clipped) window of pool neuron x receives
    δ_pool(x)/p² · r_{x|x'}, with r = e_{x|x'}/o_{x'} if o_x > 0 and o_{x'} > 0, else 1.

    Args:
        delta_pool: ``[C, Hp, Wp]``; in_spikes: conv raster ``[T, C, H, W]``;
        out_spikes: pool raster ``[T, C, Hp, Wp]``; p: pool size = skip.

    Returns:
        delta_conv ``[C, H, W]`` float64.
    """
    delta_pool = np.asarray(delta_pool, dtype=np.float64)
    in_spikes = np.asarray(in_spikes)
    out_spikes = np.asarray(out_spikes)
    _, n_c, height, width = in_spikes.shape
    _, _, h_pool, w_pool = out_spikes.shape
    delta_conv = np.zeros((n_c, height, width), dtype=np.float64)
    for c in range(n_c):
        for x in range(h_pool):
            for y in range(w_pool):
                post = _times_of(out_spikes[:, c, x, y])
                o_pool = len(post)
                for xx in range(x * p, min(x * p + p, height)):
                    for yy in range(y * p, min(y * p + p, width)):
                        pre = _times_of(in_spikes[:, c, xx, yy])
                        o_conv = len(pre)
                        if o_pool > 0 and o_conv > 0:
                            e = psp_pair_ref(post, pre, tau_m=tau_m, tau_s=tau_s, t_ref=t_ref)
                            r = e / o_conv
                        else:
                            r = 1.0
                        delta_conv[c, xx, yy] += float(delta_pool[c, x, y]) / (p * p) * r
    return delta_conv


# ---------------------------------------------------------------------------------------------
# §4.1 Weight regulariser
# ---------------------------------------------------------------------------------------------


def regularizer_grad_ref(W: np.ndarray, lam: float, beta: float, limit: float = 8.0) -> np.ndarray:
    """Gradient of the soft weight-norm regulariser, docs/algorithm.md §4.1 (the term added to g), float64.

    reg_ij = λ β (w_ij/L) exp(β (S_i − 1)), S_i = (1/N_in) Σ_j (w_ij/L)², where row i is one
    output neuron of an FC layer ``[N_out, N_in]`` or one kernel k of a conv layer ``[K, C, k, k]``
    (S_k over its C·k·k weights). Returns an array of W's shape.
    """
    Wd = np.asarray(W, dtype=np.float64)
    rows = Wd.reshape(Wd.shape[0], -1)
    n_rows, n_per_row = rows.shape
    grad = np.zeros_like(rows)
    for i in range(n_rows):
        acc = 0.0
        for j in range(n_per_row):
            acc += (rows[i, j] / limit) ** 2
        s_i = acc / n_per_row
        factor = math.exp(beta * (s_i - 1.0))
        for j in range(n_per_row):
            grad[i, j] = lam * beta * (rows[i, j] / limit) * factor
    return grad.reshape(Wd.shape)
