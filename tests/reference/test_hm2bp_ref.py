"""Tests of the loop-based reference (src/hm2bp/reference/hm2bp_ref.py) against numbers derived by
hand from docs/algorithm.md, never against the reference itself. The golden-marked tests at the end
compare with the authors' data in ../shared/golden and skip when it is absent.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

import shared_paths
from hm2bp.reference import hm2bp_ref as ref

TAU_M = 64.0
TAU_S = 8.0
A = 1.0 - 1.0 / TAU_M  # membrane decay per step
B = 1.0 - 1.0 / TAU_S  # synaptic decay per step


def eps(u: float) -> float:
    """ε(u) = (e^{−u/τm} − e^{−u/τs}) / (1 − τs/τm): K(s, u) for u ≤ s (docs/algorithm.md §2 step 3)."""
    return (math.exp(-u / TAU_M) - math.exp(-u / TAU_S)) / (1.0 - TAU_S / TAU_M)


def raster(T: int, n: int, spikes: dict[int, list[int]]) -> np.ndarray:
    """A bool [T, n] raster with the given spike times per neuron."""
    s = np.zeros((T, n), dtype=bool)
    for i, times in spikes.items():
        for t in times:
            s[t, i] = True
    return s


def times_of(train: np.ndarray) -> list[int]:
    return [int(t) for t in np.flatnonzero(train)]


# ---------------------------------------------------------------------------------------------
# §2 S-PSP kernel and pair loop
# ---------------------------------------------------------------------------------------------


def test_kernel_matches_spec_example_eps8():
    # docs/algorithm.md §2 note: "at Δt = 10 ... the code's kernel is ε(8) = 0.588"
    k = ref.psp_kernel_ref(19, 8)
    assert k == pytest.approx(0.588, abs=5e-4)
    # by hand: (e^{-1/8} − e^{-1}) / (7/8) = (0.8824969 − 0.3678794) / 0.875
    assert k == pytest.approx((0.8824969026 - 0.3678794412) / 0.875, rel=1e-9)


def test_kernel_reset_branch_by_hand():
    # u > s: K = exp(−(u − s)/τs) · ε(s)
    assert ref.psp_kernel_ref(18, 23) == pytest.approx(math.exp(-5 / 8) * eps(18), rel=1e-12)
    # u = s: both branches agree on ε(s)
    assert ref.psp_kernel_ref(10, 10) == pytest.approx(eps(10), rel=1e-12)


def test_psp_single_pair_by_hand():
    # post at 20, pre at 10: s_1 = 20 − ŝ^(0) = 19, u = 20 − (10 + 2) = 8  →  ε(8)
    assert ref.psp_pair_ref([20], [10]) == pytest.approx(eps(8), rel=1e-12)
    # the T_ref shift: pre at 47, post at 50 → u = 1 (not 3)
    assert ref.psp_pair_ref([50], [47]) == pytest.approx(eps(1), rel=1e-12)
    assert ref.psp_pair_ref([50], [47]) != pytest.approx(eps(3), rel=1e-3)


def test_psp_special_cases():
    assert ref.psp_pair_ref([], [5, 9]) == 0.1  # silent post, active pre
    assert ref.psp_pair_ref([], []) == 0.0  # silent pre
    assert ref.psp_pair_ref([10, 30], []) == 0.0  # silent pre
    assert ref.psp_pair_ref([5], [10]) == 0.0  # post active, no qualifying pre


def test_psp_tref_edge():
    # t_j + T_ref ≤ t_k: pre at t_k − 1 does not count (it would add ε(−1) ≈ −0.134)
    assert ref.psp_pair_ref([50], [49]) == 0.0
    assert eps(-1) < -0.1  # so the previous assertion can fail
    # pre at t_k − 2 counts, with u = 0: K(s, 0) = 0 exactly
    assert ref.psp_pair_ref([50], [48]) == 0.0
    # and at t_k − 2 for the second post spike it pairs through the reset branch:
    # post [50, 80], pre [78]: k=1 none; k=2: s = 80 − 52 = 28, u = 0 → 0. pre [48]: k=1 u=0 → 0;
    # k=2: s = 28, u = 80 − 50 = 30 > 28 → e^{−2/8} ε(28)
    assert ref.psp_pair_ref([50, 80], [48]) == pytest.approx(math.exp(-2 / 8) * eps(28), rel=1e-12)


def test_psp_window_edge_4_tau_m():
    # max(1, t_k − 256) ≤ t_j: pre exactly 256 steps before counts, 257 does not
    e_in = ref.psp_pair_ref([300], [44])
    assert e_in == pytest.approx(eps(254), rel=1e-12)  # s = 299, u = 300 − 46 = 254
    assert e_in > 0.02
    assert ref.psp_pair_ref([300], [43]) == 0.0
    # the lower bound is at least 1: a pre spike at t = 0 never counts
    assert ref.psp_pair_ref([20], [0]) == 0.0
    assert ref.psp_pair_ref([20], [1]) == pytest.approx(eps(17), rel=1e-12)


def test_psp_reset_branch_pre_before_previous_post():
    # post [20, 40], pre [15]
    # k=1: s = 19, u = 20 − 17 = 3 → ε(3)
    # k=2: s = 40 − 22 = 18, u = 40 − 17 = 23 > s → e^{−5/8} ε(18)
    expected = eps(3) + math.exp(-5 / 8) * eps(18)
    assert ref.psp_pair_ref([20, 40], [15]) == pytest.approx(expected, rel=1e-12)


def test_psp_one_pre_counts_for_several_posts_and_several_pres():
    # post [30, 60], pre [10, 50]
    # k=1 (s = 29): pre 10 → u = 18 → ε(18); pre 50 does not qualify
    # k=2 (s = 60 − 32 = 28): pre 10 → u = 48 > 28 → e^{−20/8} ε(28); pre 50 → u = 8 → ε(8)
    expected = eps(18) + math.exp(-20 / 8) * eps(28) + eps(8)
    assert ref.psp_pair_ref([30, 60], [10, 50]) == pytest.approx(expected, rel=1e-12)


def test_psp_matrix_layout_post_by_pre():
    T = 40
    post = raster(T, 2, {0: [20], 1: []})
    pre = raster(T, 3, {0: [10], 1: [], 2: [30]})
    e = ref.psp_matrix_ref(post, pre)
    assert e.shape == (2, 3)
    assert e.dtype == np.float64
    np.testing.assert_allclose(e[0], [eps(8), 0.0, 0.0], rtol=1e-12)
    np.testing.assert_array_equal(e[1], [0.1, 0.0, 0.1])


# ---------------------------------------------------------------------------------------------
# §1 Forward pass
# ---------------------------------------------------------------------------------------------


def test_lif_constant_drive_first_spike_and_refractory_gap():
    # Constant drive c = 1, ν = 5. Before the first spike x(n) = 8c(1 − b^n) and
    # v(t) = Σ_{n=1..t} a^{t−n} c (1 − b^n): v(10) = 4.5957, v(11) = 5.2937 → first spike at t = 11.
    # After it v = 0 at 12 and 13 (clamp), x keeps integrating, and
    # v(t) = Σ_{n=14..t} a^{t−n} c(1 − b^n):
    # v(18) = 4.266, v(19) = 5.120 → second spike at 19.
    def closed_form(start: int, t: int) -> float:
        return sum(A ** (t - n) * (1 - B**n) for n in range(start, t + 1))

    assert closed_form(1, 10) < 5 - 0.3 < 5 + 0.2 < closed_form(1, 11)
    assert closed_form(14, 18) < 5 - 0.3 < 5 + 0.1 < closed_form(14, 19)
    s = ref.lif_forward_ref(np.ones((25, 1), dtype=np.float32), 5.0, 1e-6)
    assert s.dtype == bool and s.shape == (25, 1)
    assert times_of(s[:, 0]) == [11, 19]


def test_lif_strong_drive_fires_every_third_step():
    # drive 50: x(1) = 50, v(1) = 6.25 > 5 → spike at 1; clamp at 2, 3; then x/8 > 5 at once:
    # 4, 7, ...
    s = ref.lif_forward_ref(np.full((20, 1), 50.0, dtype=np.float32), 5.0, 1e-6)
    assert times_of(s[:, 0]) == [1, 4, 7, 10, 13, 16, 19]


def test_lif_t0_never_spikes_and_one_step_delay():
    # drive[t] acts at step t + 1. With T = 4 a spike at 1 or 2 clamps the rest of the window.
    drive = np.zeros((4, 1), dtype=np.float32)
    drive[0, 0] = 1000.0  # consumed at step 1
    assert times_of(ref.lif_forward_ref(drive, 5.0, 1e-6)[:, 0]) == [1]
    drive = np.zeros((4, 1), dtype=np.float32)
    drive[1, 0] = 1000.0  # consumed at step 2
    assert times_of(ref.lif_forward_ref(drive, 5.0, 1e-6)[:, 0]) == [2]
    drive = np.zeros((4, 1), dtype=np.float32)
    drive[3, 0] = 1000.0  # would act at step 4, outside the window
    assert not ref.lif_forward_ref(drive, 5.0, 1e-6).any()
    # t = 0 never spikes, whatever the drive
    assert not ref.lif_forward_ref(np.full((3, 2), 1e6, dtype=np.float32), 0.0, 0.0)[0].any()


def test_lif_strict_threshold_conv_vs_fc():
    # drive 40 at every step, ν = 5: v(1) = 40/8 = 5.0 exactly.
    drive = np.full((4, 1), 40.0, dtype=np.float32)
    fc = ref.lif_forward_ref(drive, 5.0, 1e-6)  # θ = ν − 1e-6 → spikes at 1
    conv = ref.lif_forward_ref(drive, 5.0, 0.0)  # θ = ν, strict ">" → no spike at 1
    assert times_of(fc[:, 0]) == [1]
    # conv: v(2) = 5·(63/64) + (40·7/8 + 40)/8 = 14.30 > 5
    assert times_of(conv[:, 0]) == [2]


def test_lif_lateral_inhibition_delays_spike():
    # Neuron 1 spikes once at t = 1 (drive 48 at step 0, then −1000). Neuron 0 has drive 1 and
    # w_lat[0, 1] = −3, so at step 2 its input is 1 − 3: x(n) = 8(1 − b^n) − 3 b^{n−2} for n ≥ 2.
    # By hand: without inhibition the first spike is at 11 (above); with it, v(13) = 4.59 and
    # v(14) = 5.29 → first spike at 14.
    T = 20
    drive = np.zeros((T, 2), dtype=np.float32)
    drive[:, 0] = 1.0
    drive[0, 1] = 48.0
    drive[1:, 1] = -1000.0
    lat = np.array([[0.0, -3.0], [0.0, 0.0]], dtype=np.float32)
    x = v = 0.0
    for t in range(1, 15):
        x = B * x + 1.0 - (3.0 if t == 2 else 0.0)
        v = A * v + x / 8
        if t == 13:
            assert v < 5 - 0.3
    assert v > 5 + 0.2
    s = ref.lif_forward_ref(drive, 5.0, 1e-6, lateral=lat)
    assert times_of(s[:, 1]) == [1]
    assert times_of(s[:, 0])[0] == 14
    s_free = ref.lif_forward_ref(drive, 5.0, 1e-6)
    assert times_of(s_free[:, 0])[0] == 11


def test_fc_forward_sums_weights_of_spiking_inputs():
    # Inputs 0 and 2 spike at t = 3 (input 1 never). Row 0 = [30, −100, 20] → drive 50 at t = 3,
    # used at step 4: v(4) = 50/8 = 6.25 > 5 → spike at 4; clamp at 5, 6; v(7) = 50·b³/8 = 4.19 < 5.
    # Row 1 = [3, 100, 3] → drive 6; a unit pulse peaks at v = 0.757 (n = 18); 6·0.757 < 5: silent.
    T = 8
    s_in = raster(T, 3, {0: [3], 2: [3]})
    W = np.array([[30.0, -100.0, 20.0], [3.0, 100.0, 3.0]], dtype=np.float32)
    out = ref.fc_forward_ref(s_in, W, 5.0)
    assert out.shape == (T, 2)
    assert times_of(out[:, 0]) == [4]
    assert times_of(out[:, 1]) == []


def test_conv_forward_is_cross_correlation_without_flip():
    # 1 channel 3×3, kernel 2×2 with only W[0,0,0,1] = 8. An input spike at pixel (1,1) at t = 2
    # drives output (x, y) with x + 0 = 1, y + 1 = 1, i.e. (1, 0); v = 8/8 = 1 > 0.5 → spike at 3
    # (T = 6: clamp at 4, 5). A flipped kernel would make output (0, 1) fire instead.
    T = 6
    s_in = np.zeros((T, 1, 3, 3), dtype=bool)
    s_in[2, 0, 1, 1] = True
    W = np.zeros((1, 1, 2, 2), dtype=np.float32)
    W[0, 0, 0, 1] = 8.0
    out = ref.conv_forward_ref(s_in, W, 0.5)
    assert out.shape == (T, 1, 2, 2)
    assert out.sum() == 1
    assert out[3, 0, 1, 0]


def test_pool_forward_window_clipping_on_odd_size():
    # 3×3 map, p = 2 → 2×2 pool map. Windows: (0,0) = rows 0–1 × cols 0–1, (0,1) = rows 0–1 × col 2,
    # (1,0) = row 2 × cols 0–1, (1,1) = pixel (2,2) only.
    # Response of v to n simultaneous input spikes at step t0: n·(0.125, 0.232, 0.325, 0.403, 0.470,
    # 0.527, ...) at t0+1, t0+2, ...; the unit pulse peaks at 0.757. With ν = 1 a lone spike never
    # fires; two in one window fire when 2·0.527 = 1.054 > 1, 6 steps after the input step.
    T = 14
    s_in = np.zeros((T, 1, 3, 3), dtype=bool)
    s_in[5, 0, 0, 2] = True
    s_in[5, 0, 1, 2] = True  # both in (0,1)'s clipped window → spike at 5 + 6 = 11
    s_in[5, 0, 1, 1] = True  # alone in (0,0)
    s_in[5, 0, 2, 1] = True  # alone in (1,0)
    s_in[2, 0, 2, 2] = True  # alone in (1,1)
    out = ref.pool_forward_ref(s_in, 2, 1.0)
    assert out.shape == (T, 1, 2, 2)
    assert times_of(out[:, 0, 0, 1]) == [11]
    assert out.sum() == 1
    # with ν = 0.1 the lone corner pixel (2,2) makes pool (1,1) fire the next step (0.125 > 0.1)
    out = ref.pool_forward_ref(s_in, 2, 0.1)
    assert times_of(out[:, 0, 1, 1])[0] == 3
    # a 5×5 map with p = 2 gives a 3×3 pool map
    assert ref.pool_forward_ref(np.zeros((2, 2, 5, 5), dtype=bool), 2, 1.0).shape == (2, 2, 3, 3)


# ---------------------------------------------------------------------------------------------
# §3.1, §3.2, §3.6 Output error and spike insertion
# ---------------------------------------------------------------------------------------------


def test_output_delta_dead_zone():
    counts = np.array([10, 11, 29, 30, 0, 40])
    # label 2 (y = 35), others y = 5, margin 5 (strict >):
    # 10−5 = 5 → 0; 11−5 = 6; 29−35 = −6; 30−5 = 25; 0−5 = −5 → 0; 40−5 = 35
    np.testing.assert_array_equal(ref.output_delta_ref(counts, 2), [0, 6, -6, 25, 0, 35])
    np.testing.assert_array_equal(
        ref.output_delta_ref(counts, 2, boost=2.0), [0, 12, -12, 50, 0, 70]
    )
    # label neuron inside its own dead zone: 30 − 35 = −5 → 0
    assert ref.output_delta_ref(np.array([30, 0]), 0)[0] == 0.0


def test_softmax_delta_by_hand():
    np.testing.assert_allclose(ref.softmax_delta_ref(np.array([0, 0]), 0), [-0.5, 0.5])
    e = math.e
    np.testing.assert_allclose(
        ref.softmax_delta_ref(np.array([1, 0]), 1, boost=3.0),
        [3 * e / (1 + e), 3 * (1 / (1 + e) - 1)],
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    ("T", "expected"), [(400, 36), (450, 37), (540, 35), (658, 36), (1544, 35)]
)
def test_insertion_counts_from_spec(T, expected):
    s = np.zeros((T, 3), dtype=bool)
    new = ref.insert_spikes_ref(s, 1)
    assert new[:, 1].sum() == expected
    step = T // 35
    assert times_of(new[:, 1])[:2] == [step, 2 * step]
    assert not new[:, 0].any() and not new[:, 2].any()
    assert not s.any()  # the input is not modified


def test_insertion_only_when_label_silent():
    s = raster(100, 2, {0: [50], 1: []})
    np.testing.assert_array_equal(ref.insert_spikes_ref(s, 0), s)
    assert ref.insert_spikes_ref(s, 1)[:, 1].sum() == 99 // 2  # Δ = ⌊100/35⌋ = 2: 2, 4, ..., 98


# ---------------------------------------------------------------------------------------------
# §3.4 Lateral factor
# ---------------------------------------------------------------------------------------------


def test_lateral_factor_two_neurons_by_hand():
    # n0 fires at [10, 30], n1 at [20]; label 0; ν = 5 → d = [1/5, 1/5].
    # e_{1|0} = psp(post [20], pre [10, 30]) = ε(8); e_{0|1} = psp(post [10, 30], pre [20]):
    # k=2, s = 30 − 12 = 18, u = 8 → ε(8).  f = [2, 1]: R_01 = ε(8)/2, R_10 = ε(8)/1.
    # Λ_0 = Λ_1 = 1 / (1 − ε(8)²/2 · 1/25).
    s = raster(40, 2, {0: [10, 30], 1: [20]})
    lam = ref.lateral_factor_ref(s, 0, 5.0)
    expected = 1.0 / (1.0 - eps(8) ** 2 / 2.0 / 25.0)
    np.testing.assert_allclose(lam, [expected, expected], rtol=1e-12)
    assert expected > 1.005


def test_lateral_factor_silent_label_and_silent_other():
    # add n2 (the label, silent) and n3 (silent, not the label): d_2 = 1/5, d_3 = 0.
    # Pairs with a silent neuron use R = 1. Λ_2 = 1/(1 − (d_0 + d_1)·d_2) = 1/(1 − 2/25) = 25/23.
    # Λ_0 = 1/(1 − ε(8)²/50 − 1/25). Λ_3: d_3 = 0 → 1.
    s = raster(40, 4, {0: [10, 30], 1: [20]})
    lam = ref.lateral_factor_ref(s, 2, 5.0)
    base = eps(8) ** 2 / 50.0
    np.testing.assert_allclose(
        lam, [1 / (1 - base - 1 / 25), 1 / (1 - base - 1 / 25), 25 / 23, 1.0], rtol=1e-12
    )
    # strength w0 scales the loop gain by w0²
    lam2 = ref.lateral_factor_ref(s, 2, 5.0, w0=2.0)
    assert lam2[2] == pytest.approx(1 / (1 - 4 * 2 / 25), rel=1e-12)


def test_lateral_factor_warns_on_loop_gain_ge_one():
    s = raster(40, 3, {0: [10], 1: [20]})
    with pytest.warns(RuntimeWarning):
        lam = ref.lateral_factor_ref(s, 2, 0.5)  # Λ_2: 1 − (2 + 2)·2 < 0
    assert lam[2] == pytest.approx(1 / (1 - 8), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# §3.3 FC backward, §3.7 output order
# ---------------------------------------------------------------------------------------------


def test_fc_backward_by_hand():
    # 1 output (fires at 20), 2 inputs (j0 at 10 and 14, j1 silent); W = [2, 3]; ν = 5; δ = 10.
    # e_0 = ε(8) + ε(4) (s = 19, u = 8 and 4), e_1 = 0; o_out = 1, o_in = [2, 0]; δ̂ = 2;
    # σ = (2·e_0/1 + 3·0/1)/5; g = [2 e_0 (1 + σ), 0];
    # δ_below: j0 r = e_0/2 → 2·2·e_0/2; j1 silent → r = 1 → 2·3.
    T = 40
    s_in = raster(T, 2, {0: [10, 14]})
    s_out = raster(T, 1, {0: [20]})
    W = np.array([[2.0, 3.0]], dtype=np.float32)
    e0 = eps(8) + eps(4)
    sigma = 2 * e0 / 5
    g, db = ref.fc_backward_ref(np.array([10.0]), s_in, s_out, W, 5.0)
    np.testing.assert_allclose(g, [[2 * e0 * (1 + sigma), 0.0]], rtol=1e-12)
    np.testing.assert_allclose(db, [2 * 2 * e0 / 2, 6.0], rtol=1e-12)
    _, db_plain = ref.fc_backward_ref(np.array([10.0]), s_in, s_out, W, 5.0, effect_ratio=False)
    np.testing.assert_allclose(db_plain, [4.0, 6.0], rtol=1e-12)
    g_lat, _ = ref.fc_backward_ref(
        np.array([10.0]), s_in, s_out, W, 5.0, lateral_factor=np.array([1.5])
    )
    np.testing.assert_allclose(g_lat, 1.5 * g, rtol=1e-12)


def test_fc_backward_silent_post():
    # silent output: e = [0.1, 0]; ρ = 0.5 for every input → σ = (2 + 3)·0.5/5 = 0.5;
    # g = [2·0.1·1.5, 0]; r = 1 → δ_below = [2·2, 2·3]
    T = 40
    s_in = raster(T, 2, {0: [10]})
    s_out = raster(T, 1, {})
    W = np.array([[2.0, 3.0]], dtype=np.float32)
    g, db = ref.fc_backward_ref(np.array([10.0]), s_in, s_out, W, 5.0)
    np.testing.assert_allclose(g, [[0.3, 0.0]], rtol=1e-12)
    np.testing.assert_allclose(db, [4.0, 6.0], rtol=1e-12)


def _inserted_e(pre_time: int) -> float:
    # T = 140 → Δ = 4, inserted post spikes at 4, 8, ..., 136 (34 spikes); s_1 = 3, s_k = 2 after.
    # pre at 5 pairs with t_k ≥ 7: t = 8 → s = 2, u = 1 → ε(1); t = 4m (m ≥ 3) → u = 4m − 7 > 2
    # → e^{−(4m − 9)/8} ε(2)
    assert pre_time == 5
    return eps(1) + sum(math.exp(-(4 * m - 9) / 8) * eps(2) for m in range(3, 35))


def test_output_backward_order_rate_loss():
    # 2 outputs, label 0 silent, neuron 1 fires once at 50 (raw counts [0, 1]); 1 input at 5; ν = 5.
    # δ from raw counts: [0 − 35, 1 − 5 → dead zone 0] = [−35, 0] (after insertion: −1 → 0)
    # Λ from raw spikes: f = [0, 1], d = [1/5, 1/5], R = 1 → Λ_0 = 1/(1 − 1/25) = 25/24.
    # Inserted: 34 spikes for neuron 0; e_00 from _inserted_e; o_0 = 34, o_in = 1.
    T = 140
    raw = raster(T, 2, {1: [50]})
    s_in = raster(T, 1, {0: [5]})
    W = np.array([[2.0], [-1.0]], dtype=np.float32)
    e00 = _inserted_e(5)
    sigma0 = 2.0 * e00 / 34 / 5
    g, db = ref.output_backward_ref(raw, s_in, W, 5.0, 0)
    np.testing.assert_allclose(g[0, 0], -7.0 * e00 * (1 + sigma0) * 25 / 24, rtol=1e-12)
    assert g[1, 0] == 0.0
    # δ_below = δ̂_0 w_00 r_00 with r = e_00/1, plus δ̂_1 = 0
    np.testing.assert_allclose(db, [-7.0 * 2.0 * e00], rtol=1e-12)
    g_nolat, _ = ref.output_backward_ref(raw, s_in, W, 5.0, 0, lateral=False)
    np.testing.assert_allclose(g_nolat[0, 0], -7.0 * e00 * (1 + sigma0), rtol=1e-12)


def test_output_backward_softmax_loss():
    # raw counts [0, 1] → P = [1/(1+e), e/(1+e)]; δ = [−e/(1+e), e/(1+e)].
    # Row 1: post [50], pre [5] → s = 49, u = 43 → ε(43); σ_1 = (−1)·ε(43)/1/5; Λ_1 = 25/24.
    T = 140
    raw = raster(T, 2, {1: [50]})
    s_in = raster(T, 1, {0: [5]})
    W = np.array([[2.0], [-1.0]], dtype=np.float32)
    p1 = math.e / (1 + math.e)
    g, _ = ref.output_backward_ref(raw, s_in, W, 5.0, 0, loss="softmax")
    e00 = _inserted_e(5)
    np.testing.assert_allclose(
        g[0, 0], -p1 / 5 * e00 * (1 + 2.0 * e00 / 34 / 5) * 25 / 24, rtol=1e-12
    )
    np.testing.assert_allclose(
        g[1, 0], p1 / 5 * eps(43) * (1 - eps(43) / 5) * 25 / 24, rtol=1e-12
    )


# ---------------------------------------------------------------------------------------------
# §3.5 Conv and pool backward
# ---------------------------------------------------------------------------------------------


def test_conv_backward_by_hand():
    # input [T, 1, 2, 3], kernel 2×2 → output [T, 1, 1, 2]. Pixel (0,1) spikes at 10 and 14; output
    # (0,0) fires at 20, output (0,1) is silent. ν = 5, δ = [d0, d1] = [10, −5] → δ̂ = [2, −1].
    # out (0,0): only kernel tap (0,1) sees pixel (0,1): e = ε(8) + ε(4) =: e0, σ0 = W01·e0/1/5.
    # out (0,1): silent; tap (0,0) sees pixel (0,1): e = 0.1; ρ = 0.5 everywhere: σ1 = 0.5·ΣW/5.
    T = 40
    s_in = np.zeros((T, 1, 2, 3), dtype=bool)
    s_in[10, 0, 0, 1] = True
    s_in[14, 0, 0, 1] = True
    s_out = np.zeros((T, 1, 1, 2), dtype=bool)
    s_out[20, 0, 0, 0] = True
    W = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=np.float32)  # W00 W01 / W10 W11
    delta = np.array([[[10.0, -5.0]]])
    e0 = eps(8) + eps(4)
    sigma0 = 2.0 * e0 / 5
    sigma1 = 0.5 * 10.0 / 5
    g, db = ref.conv_backward_ref(delta, s_in, s_out, W, 5.0)
    expected_g = np.zeros((1, 1, 2, 2))
    expected_g[0, 0, 0, 1] = 2 * e0 * (1 + sigma0)
    expected_g[0, 0, 0, 0] = -1 * 0.1 * (1 + sigma1)
    np.testing.assert_allclose(g, expected_g, rtol=1e-12)
    # δ_below: r = 1 unless both counts > 0 (only pixel (0,1) via out (0,0): r = e0/o_in = e0/2)
    expected_db = np.array(
        [
            [
                [2 * 1.0, 2 * 2.0 * e0 / 2 + (-1) * 1.0, (-1) * 2.0],
                [2 * 3.0, 2 * 4.0 + (-1) * 3.0, (-1) * 4.0],
            ]
        ]
    )
    np.testing.assert_allclose(db, expected_db, rtol=1e-12)
    g2, db2 = ref.conv_backward_ref(delta, s_in, s_out, W, 5.0, need_delta_below=False)
    assert db2 is None
    np.testing.assert_allclose(g2, g, rtol=0)


def test_pool_backward_by_hand_with_clipping():
    # conv map 3×3 → pool 2×2 (p = 2). Pool (0,0) fires at 20; conv (0,0) at 10 and 14,
    # conv (1,1) at 12, conv (2,0) at 5 (its pool (1,0) is silent). No ν division, /p² = /4.
    # r for conv (0,0) = (ε(8) + ε(4))/2 (s = 19, u = 8 and 4; o = 2); for conv (1,1) = ε(6)/1.
    T = 40
    conv = np.zeros((T, 1, 3, 3), dtype=bool)
    conv[10, 0, 0, 0] = True
    conv[14, 0, 0, 0] = True
    conv[12, 0, 1, 1] = True
    conv[5, 0, 2, 0] = True
    pool = np.zeros((T, 1, 2, 2), dtype=bool)
    pool[20, 0, 0, 0] = True
    a, b, c, d = 8.0, -4.0, 12.0, 2.0
    dp = np.array([[[a, b], [c, d]]])
    got = ref.pool_backward_ref(dp, conv, pool, 2)
    expected = np.array(
        [
            [
                [a / 4 * (eps(8) + eps(4)) / 2, a / 4, b / 4],  # (0,1) silent → r = 1
                [a / 4, a / 4 * eps(6), b / 4],  # conv (1,1): u = 20 − 14 = 6
                [c / 4, c / 4, d / 4],  # (2,0) active but pool silent → r = 1; (2,2) alone
            ]
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# §4.1 Regulariser
# ---------------------------------------------------------------------------------------------


def test_regularizer_fc_by_hand():
    # L = 8: row 0 = [8, 0] → S = (1 + 0)/2 = 0.5; row 1 = [−8, 8] → S = 1 → exp(0) = 1
    W = np.array([[8.0, 0.0], [-8.0, 8.0]], dtype=np.float32)
    lam, beta = 10.0, 0.4
    got = ref.regularizer_grad_ref(W, lam, beta)
    np.testing.assert_allclose(
        got, [[4.0 * math.exp(-0.2), 0.0], [-4.0, 4.0]], rtol=1e-12
    )


def test_regularizer_conv_groups_per_kernel():
    # W [2, 2, 1, 1]: kernel 0 = [4, 4] → S = (0.25 + 0.25)/2 = 0.25; kernel 1 = [16, 0] → S = 2
    W = np.array([4.0, 4.0, 16.0, 0.0], dtype=np.float32).reshape(2, 2, 1, 1)
    got = ref.regularizer_grad_ref(W, 1.0, 1.0, limit=8.0)
    assert got.shape == (2, 2, 1, 1)
    np.testing.assert_allclose(
        got.reshape(4), [0.5 * math.exp(-0.75), 0.5 * math.exp(-0.75), 2 * math.e, 0.0], rtol=1e-12
    )


# ---------------------------------------------------------------------------------------------
# Golden data (docs/algorithm.md §6.4): skipped when ../shared/golden is absent
# ---------------------------------------------------------------------------------------------

_GOLDEN = shared_paths.GOLDEN


def _open(path: Path):
    if path.exists():
        return open(path)
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gzip.open(gz, "rt")
    pytest.skip(f"golden file absent: {path}")


def _sparse(path: Path, T: int, n: int) -> np.ndarray:
    s = np.zeros((T, n), dtype=bool)
    with _open(path) as f:
        for line in f:
            neuron, t = (int(v) for v in line.split())
            if neuron >= 0 and t < T:
                s[t, neuron] = True
    return s


def _weights(path: Path, n_out: int, n_in: int) -> np.ndarray:
    W = np.zeros((n_out, n_in), dtype=np.float64)
    with _open(path) as f:
        for line in f:
            _, pre, post, w = line.split()
            W[int(post.rsplit("_", 1)[1]), int(pre.rsplit("_", 1)[1])] += float(w)
    return W


@pytest.mark.golden
def test_golden_ti46_forward_and_sgd_gradients():
    # TI46 test (docs/algorithm.md §6.3): SGD lr 1e-5, no effect ratio, no lateral inhibition, label 0.
    d = _GOLDEN / "test" / "golden" / "speech" / "ti_alpha"
    T = 658
    res = _sparse(d / "spikes/Reservoir_Response/0/reservoir_spikes_0_0.dat", T, 135)
    hid = _sparse(d / "spikes/Hidden_Response_Supv/train/0/hidden_0_spikes_0_0.dat", T, 64)
    out = _sparse(d / "spikes/Readout_Response_Supv/train/0/readout_spikes_0_0.dat", T, 26)
    Wh = _weights(d / "weights/h_weights_info.txt", 64, 135).astype(np.float32)
    Wo = _weights(d / "weights/o_weights_info.txt", 26, 64).astype(np.float32)
    Wh_new = _weights(d / "weights/h_weights_info_trained.txt", 64, 135)
    Wo_new = _weights(d / "weights/o_weights_info_trained.txt", 26, 64)
    np.testing.assert_array_equal(ref.fc_forward_ref(res, Wh, 20.0), hid)
    np.testing.assert_array_equal(ref.fc_forward_ref(hid, Wo, 5.0), out)
    g_out, d_below = ref.output_backward_ref(
        out, hid, Wo, 5.0, 0, lateral=False, effect_ratio=False
    )
    g_hid, _ = ref.fc_backward_ref(d_below, res, hid, Wh, 20.0, effect_ratio=False)
    true_out = (Wo.astype(np.float64) - Wo_new) / 1e-5
    true_hid = (Wh.astype(np.float64) - Wh_new) / 1e-5
    assert np.abs(true_out).max() > 100
    np.testing.assert_allclose(g_out, true_out, atol=0.2, rtol=0)
    np.testing.assert_allclose(g_hid, true_hid, atol=0.2, rtol=0)


@pytest.mark.golden
@pytest.mark.parametrize("variant", ["", "_softmax"])
def test_golden_cnn_fc_layers_gradient_signs(variant):
    # CNN test (docs/algorithm.md §6.3): Adam's first step is lr·sign(g); regulariser λ = 10, β = 0.4; output LI.
    d = _GOLDEN / "test" / "golden" / "cnn_mnist"
    sp, wt = d / f"spikes{variant}", d / f"weights{variant}"
    T = 450
    with _open(sp / "pool2/train/pool2_1.dat") as f:
        tokens = np.array(f.read().split(), dtype=np.int8)
    pool2 = tokens.reshape(3, T, 16).transpose(1, 0, 2).reshape(T, 48).astype(bool)
    hid = _sparse(sp / "hidden/train/hidden.dat", T, 100)
    out = _sparse(sp / "output/train/output.dat", T, 10)
    Wh = _weights(wt / "hidden_info.txt", 100, 48).astype(np.float32)
    Wo = _weights(wt / "output_info.txt", 10, 100).astype(np.float32)
    lat = -(np.ones((10, 10), dtype=np.float32) - np.eye(10, dtype=np.float32))
    np.testing.assert_array_equal(ref.fc_forward_ref(pool2, Wh, 10.0), hid)
    np.testing.assert_array_equal(ref.fc_forward_ref(hid, Wo, 5.0, lateral=lat), out)
    loss = "softmax" if variant else "rate"
    g_out, d_below = ref.output_backward_ref(out, hid, Wo, 5.0, 5, loss=loss)
    g_hid, _ = ref.fc_backward_ref(d_below, pool2, hid, Wh, 10.0)
    for g, W, name in ((g_out, Wo, "output"), (g_hid, Wh, "hidden")):
        total = g + ref.regularizer_grad_ref(W, 10.0, 0.4)
        W_new = _weights(wt / f"{name}_info_trained.txt", *W.shape)
        np.testing.assert_array_equal(np.sign(total), np.sign(W.astype(np.float64) - W_new))
