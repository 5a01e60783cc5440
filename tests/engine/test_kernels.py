"""The compiled CPU kernels give bit-identical results to the pure-torch loops."""

from __future__ import annotations

import pytest
import torch

from hm2bp.functional import psp
from hm2bp.functional.neuron import _simulate_lif_torch, simulate_lif
from hm2bp.functional.params import NeuronParams
from hm2bp.kernels import cpu

pytestmark = pytest.mark.skipif(cpu.library() is None, reason="no C compiler: compiled kernels unavailable")


@pytest.mark.parametrize("tau_m,tau_s,t_ref", [(64.0, 8.0, 2), (20.0, 5.0, 3), (10.0, 3.0, 0)])
@pytest.mark.parametrize("lateral", [False, True])
def test_lif_kernel_equals_torch_loop(tau_m: float, tau_s: float, t_ref: int, lateral: bool) -> None:
    gen = torch.Generator().manual_seed(int(tau_m) + lateral)
    drive = torch.rand(300, 5, 12, generator=gen) * 1.5 - 0.2
    w_lat = torch.randn(12, 12, generator=gen) if lateral else None
    p = NeuronParams(4.0, tau_m, tau_s, t_ref)
    fast = simulate_lif(drive, p, w_lat)
    slow = _simulate_lif_torch(drive, p, w_lat)
    assert torch.equal(fast, slow)
    assert 100 < fast.sum() < fast.numel() / 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_psp_coefficient_kernel_equals_torch_path(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    spikes = (torch.rand(700, 4, 37, generator=gen) < 0.05).float()
    spikes[:, 0, 0] = 0
    spikes[[0, 1, 699], 1, 1] = 1
    p = NeuronParams(5.0)
    fast = psp.psp_coefficients(spikes, p, dtype)
    monkeypatch.setattr(cpu, "usable", lambda *t: False)
    slow = psp.psp_coefficients(spikes, p, dtype)
    # The kernel computes the coefficients in double; the torch path in `dtype`.
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, slow, **tol)
    assert fast.abs().sum() > 0


def _event_case(seed: int, dtype: torch.dtype = torch.float32, T: int = 120, B: int = 3, n_in: int = 40, n_out: int = 9):
    gen = torch.Generator().manual_seed(seed)
    spikes = (torch.rand(T, B, n_in, generator=gen) < 0.08).to(dtype)
    spikes[:, :, 5] = 0
    w = (torch.rand(n_out, n_in, generator=gen, dtype=dtype) * 2.0 - 0.6)
    return spikes, w


def _sequential_drive(spikes: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """W·s(t) summed spike by spike in index order, as the event kernels do (so rounding is identical)."""
    T, B, _ = spikes.shape
    drive = torch.zeros(T, B, w.shape[0], dtype=w.dtype)
    for t in range(T):
        for b in range(B):
            for j in torch.nonzero(spikes[t, b]).flatten().tolist():
                drive[t, b] += w[:, j]
    return drive


@pytest.mark.parametrize("lateral", [False, True])
@pytest.mark.parametrize("n_out", [9, 150])  # one block; several blocks of the transposed weight slices
def test_event_forward_equals_lif_scan_and_dense_sigma(lateral: bool, n_out: int) -> None:
    from hm2bp.functional import events as ev

    spikes, w = _event_case(21 + lateral, n_in=43, n_out=n_out)
    p = NeuronParams(2.0)
    w_lat = -0.7 * (1.0 - torch.eye(w.shape[0])) if lateral else None
    idx = ev.spike_events(spikes)
    assert idx is not None
    out, kept = ev.forward(idx, w, p, w_lat, keep=True)
    assert kept is not None
    out_u8, counts, psp_drive = kept
    drive = _sequential_drive(spikes, w)
    expected = _simulate_lif_torch(drive, p, w_lat)
    assert torch.equal(out, expected)  # bit-identical spikes
    assert torch.equal(out_u8, expected.to(torch.uint8))
    assert torch.equal(counts, expected.sum(0).to(torch.int32))
    assert 20 < out.sum() < out.numel() / 3
    coeffs = psp.psp_coefficients(expected, p, torch.float64)
    torch.testing.assert_close(psp_drive, (coeffs * drive.double()).sum(0), rtol=1e-12, atol=1e-12)
    no_keep = ev.forward(idx, w, p, w_lat, keep=False)
    assert torch.equal(no_keep[0], out) and no_keep[1] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n_out", [2, 9, 150])  # fewer neurons than threads; one block each; uneven blocks
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("post_rate", [0.06, 0.001])  # batch 1: the general path; grad's rows in place
def test_event_backward_kernel_equals_torch_rules(dtype: torch.dtype, threads: int, n_out: int, B: int,
                                                   post_rate: float) -> None:
    """The one-pass layer backward (σ, factor, Λ, both S-PSP contractions, the silent-post term and the
    error below) against the dense torch code of ``linear_backward`` on the same spikes, in float64."""
    from hm2bp.functional import events as ev
    from hm2bp.functional.hm2bp import linear_backward

    spikes, w = _event_case(31, dtype, B=B, n_out=n_out)
    gen = torch.Generator().manual_seed(32)
    post = (torch.rand(spikes.shape[0], spikes.shape[1], w.shape[0], generator=gen) < post_rate).to(dtype)
    post[:, 0, 0] = 0  # a silent post neuron
    post[[0, 1, 119], B - 1, 1] = 1  # spikes at the window edges
    spikes[:, 0, 3] = 0  # a silent input neuron
    delta = torch.randn(B, w.shape[0], generator=gen, dtype=dtype)
    lam = 1 + torch.rand(B, w.shape[0], generator=gen, dtype=torch.float64)
    p = NeuronParams(3.0)
    idx = ev.spike_events(spikes)
    assert idx is not None and int(idx.row_ptr[-1]) == int(spikes.sum()) and idx.cols.dtype == torch.int32
    torch.testing.assert_close(idx.counts.to(dtype), spikes.sum(0))
    drive = spikes.double() @ w.double().t()
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == torch.float32 else {"rtol": 1e-11, "atol": 1e-11}

    def close(got: torch.Tensor, want: torch.Tensor) -> None:  # float32: relative to the largest entry
        scale = float(want.abs().max()) if dtype == torch.float32 else 1.0
        torch.testing.assert_close(got.double(), want, rtol=tol["rtol"], atol=tol["atol"] * max(scale, 1.0))

    assert bool((post.sum(0) == 0).any()) and bool((post.sum(0) > 0).any())
    for lateral in (None, lam):
        for effect_ratio, need_below in ((True, True), (False, True), (True, False)):
            kw = {"lateral": lateral, "effect_ratio": effect_ratio, "need_delta_below": need_below}
            dense = linear_backward(delta.double(), spikes.double(), post.double(), w.double(), drive, p,
                                    dtype=torch.float64, **kw)
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                drive_sum = ev.psp_drive(post, idx, w, p)
                fast = linear_backward(delta, None, post.to(torch.uint8), w, None, p, dtype=dtype, events=idx, **kw)
                kept = linear_backward(delta, None, post.bool(), w, None, p, dtype=dtype, events=idx,  # the forward's
                                       psp_drive=drive_sum.double(), counts_out=post.sum(0).to(torch.int32), **kw)
            finally:
                torch.set_num_threads(previous)
            coeffs = psp.psp_coefficients(post, p, torch.float64)
            torch.testing.assert_close(drive_sum.double(), (coeffs * drive).sum(0), **tol)
            assert fast.weight.dtype == dtype and fast.weight.abs().sum() > 0
            close(fast.weight, dense.weight)
            torch.testing.assert_close(kept.weight, fast.weight, rtol=0, atol=0)
            if need_below:
                assert fast.delta_below is not None and dense.delta_below is not None
                close(fast.delta_below, dense.delta_below)
            else:
                assert fast.delta_below is None


def test_results_survive_releasing_the_kernel_scratch_memory() -> None:
    from hm2bp.functional import events as ev

    spikes, w = _event_case(41, n_out=70)
    idx = ev.spike_events(spikes)
    assert idx is not None
    first = ev.forward(idx, w, NeuronParams(2.0), None, keep=True)
    cpu.release_scratch()
    again = ev.forward(idx, w, NeuronParams(2.0), None, keep=True)
    assert torch.equal(first[0], again[0]) and first[0].sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(first[1], again[1]))  # type: ignore[arg-type]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("T", "B", "N", "rate", "dtype"), [
    (40, 5, 37, 0.1, torch.float32),   # N not a multiple of 16, several samples
    (2, 1, 800, 0.02, torch.uint8),    # fewer steps than threads, one sample
    (25, 3, 16, 0.0, torch.bool),      # no spikes at all
    (7, 4, 33, 0.9, torch.float32),    # dense
    (0, 3, 10, 0.1, torch.uint8),      # no steps
])
def test_spike_index_equals_torch_nonzero(threads: int, T: int, B: int, N: int, rate: float, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(T * 100 + N)
    spikes = (torch.rand(T, B, N, generator=gen) < rate).to(dtype)
    flat = spikes.reshape(T * B, N) != 0
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        row_ptr, cols, counts = cpu.spike_index(spikes.reshape(T * B, N), B)  # type: ignore[misc]
    finally:
        torch.set_num_threads(old)
    _, where = flat.nonzero(as_tuple=True)  # row-major order, as the CSR index lists them
    assert torch.equal(cols.long(), where)
    assert torch.equal(row_ptr, torch.cat([torch.zeros(1, dtype=torch.int64), flat.sum(1).cumsum(0)]))
    assert torch.equal(counts, spikes.reshape(T, B, N).ne(0).sum(0).long())
    # more spikes than the density limit allows: no index (the dense path), whatever the threads found
    if rate > 0 and T > 0:
        assert cpu.spike_index(spikes.reshape(T * B, N), B, max_density=0.5 * float(flat.float().mean())) is None


def test_spike_index_refuses_non_finite_and_leaves_graded_or_dense_input_to_the_dense_path() -> None:
    from hm2bp.errors import NumericalError
    from hm2bp.functional import events as ev

    spikes = (torch.rand(10, 2, 8, generator=torch.Generator().manual_seed(0)) < 0.1).float()
    assert ev.spike_events(spikes) is not None
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = spikes.clone()
        broken[3, 1, 2] = bad
        with pytest.raises(NumericalError, match="NaN or inf"):
            ev.spike_events(broken)
    graded = spikes.clone()
    graded[4, 0, 1] = 0.5
    assert ev.spike_events(graded) is None
    assert ev.spike_events(torch.ones(10, 2, 8)) is None


@pytest.mark.parametrize(("T", "B", "n", "rate", "strength"), [
    (300, 6, 10, 0.04, 1.0),   # the paper's output layer
    (300, 3, 4, 0.3, 1.0),     # strong activity: loop gains ≥ 1 (Λ ≤ 0 or inf)
    (120, 5, 7, 0.05, 2.5),    # another w0
    (20, 4, 3, 0.1, 1.0),      # T < DESIRED_LEVEL: no insertion
    (50, 2, 1, 0.0, 1.0),      # one silent neuron
    (300, 4, 10, 0.02, None),  # no lateral inhibition
    (40, 0, 10, 0.1, 1.0),     # empty batch
])
def test_output_rules_kernel_equals_torch_functions(monkeypatch: pytest.MonkeyPatch, T: int, B: int, n: int,
                                                     rate: float, strength: float | None) -> None:
    from hm2bp.functional.hm2bp import output_rules

    gen = torch.Generator().manual_seed(T + B + n)
    spikes = (torch.rand(T, B, n, generator=gen) < rate).float()
    labels = torch.randint(0, n, (B,), generator=gen)
    if B >= 2:
        spikes[:, 0, labels[0]] = 0  # a silent label neuron: spikes are inserted
    p = NeuronParams(1.0 if rate == 0.3 else 8.0)
    fast = output_rules(spikes, labels, p, strength, 35)
    monkeypatch.setattr(cpu, "usable", lambda *t: False)
    slow = output_rules(spikes, labels, p, strength, 35)
    assert fast.spikes.dtype == spikes.dtype and torch.equal(fast.spikes, slow.spikes)
    assert (fast.inserted, fast.unstable) == (slow.inserted, slow.unstable)
    assert fast.inserted == (B >= 2 and T >= 35)
    if strength is None:
        assert fast.lateral is None and slow.lateral is None
    else:
        assert fast.lateral is not None and slow.lateral is not None
        # A loop gain of exactly 1 gives Λ = ±huge or inf depending on the order of the sum: compared
        # where the factor is well defined.
        defined = torch.isfinite(slow.lateral) & (slow.lateral.abs() < 1e6)
        torch.testing.assert_close(fast.lateral[defined], slow.lateral[defined], rtol=1e-12, atol=0)
        assert torch.equal(fast.lateral.abs() >= 1e6, ~defined)
    if rate == 0.3:
        assert fast.unstable and bool((fast.lateral <= 0).any())


def test_output_rules_kernel_refuses_bad_labels() -> None:
    spikes = torch.zeros(50, 2, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 4\)"):
        cpu.output_rules(spikes, torch.tensor([1, 4]), 1, 3.0, 1.0, 64.0, 8.0, 2, 256)


def test_float32_threshold_is_the_authors_float_constant() -> None:
    # The authors' kernels hold `float threshold = vth - 1e-6`: the double difference rounded to the nearest
    # float32 (values printed by a C program doing exactly that), not the largest float32 below it.
    expected = {20.0: 19.999998092651367, 8.0: 7.999999046325684, 15.0: 14.999999046325684,
                5.0: 4.999999046325684, 10.0: 9.999999046325684}
    for v_th, theta in expected.items():
        assert NeuronParams(v_th).threshold32 == theta
    assert NeuronParams(8.0, theta_eps=0.0).threshold32 == 8.0
