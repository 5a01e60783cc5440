"""Exact zeros outside the S-PSP window (docs/algorithm.md §2, issue #13 item 4).

A pre spike outside every post spike's window [max(1, t_k − window), t_k − T_ref] contributes exactly 0 to
e_{i|j}. The backward filter places cancelling coefficients at both ends of each window; before the fix
they left float32 residuals of ~1e-7 there, which Adam (no regulariser) turned into a ±lr step per update
of a weight that must not move. Every path is checked: the compiled kernels (float and double, batch 1
and batch > 1, each rule that rebuilds C̃) and the pure-torch filter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hm2bp.functional import psp
from hm2bp.functional.events import spike_events
from hm2bp.functional.hm2bp import linear_backward
from hm2bp.functional.params import NeuronParams
from hm2bp.kernels import cpu
from hm2bp.nn.layers import SpikingLinear
from hm2bp.reference import hm2bp_ref as ref

F32, F64 = torch.float32, torch.float64
HAVE_C = cpu.library() is not None
BACKENDS = ["compiled", "torch"]


def _backend(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    if backend == "torch":
        monkeypatch.setenv("HM2BP_BACKEND", "torch")
    elif not HAVE_C:
        pytest.skip("no C compiler: compiled kernels unavailable")


def _issue_case(batch: int, dtype: torch.dtype) -> tuple[SpikingLinear, torch.Tensor, torch.Tensor]:
    """The reproduction of issue #13: input 0 fires at t = 5…19, input 1 at 300…319, the output at 306…333."""
    layer = SpikingLinear(2, 1, v_th=5, backward_dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 3.0]]))
    x = torch.zeros(400, batch, 2)
    x[5:20, :, 0] = 1
    x[300:320, :, 1] = 1
    out = layer(x)
    out.sum(0).sum().backward()  # δ = +1
    return layer, x, out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_issue_reproduction_gives_exact_zero(monkeypatch: pytest.MonkeyPatch, backend: str, batch: int,
                                             dtype: torch.dtype) -> None:
    _backend(monkeypatch, backend)
    layer, x, out = _issue_case(batch, dtype)
    fired = torch.nonzero(out[:, 0, 0]).flatten().tolist()
    assert fired[0] == 306 and fired[-1] == 333  # every window starts at ≥ 306 − 256 = 50 > 19
    grad = layer.weight.grad
    assert grad is not None
    assert grad[0, 0].item() == 0.0
    g_ref, _ = ref.fc_backward_ref(np.ones(1), x[:, 0].numpy(), out[:, 0].detach().numpy(),
                                   np.array([[0.1, 3.0]]), 5.0)
    assert g_ref[0, 0] == 0.0
    np.testing.assert_allclose(grad[0, 1].item(), batch * g_ref[0, 1], rtol=1e-5)
    # One Adam step (no regulariser) leaves the weight where it was: before the fix it moved by ~lr.
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    opt.step()
    assert layer.weight[0, 0].item() == torch.tensor(0.1).item()


def _bursty_post(rng: np.random.Generator, T: int, n: int, t_ref: int) -> np.ndarray:
    """Post trains of a few short bursts (gaps wider than the window are common), some neurons silent."""
    s = np.zeros((T, n), dtype=bool)
    for i in range(n):
        for _ in range(int(rng.integers(0, 4))):
            t = int(rng.integers(0, T))
            for _ in range(int(rng.integers(1, 6))):
                if t < T:
                    s[t, i] = True
                t += t_ref + 1 + int(rng.integers(0, 3))
    return s


def _window_cover(post: np.ndarray, p: NeuronParams) -> np.ndarray:
    """[T, N] bool: step t lies in some post spike's window (the reference's definition)."""
    T, n = post.shape
    cover = np.zeros((T, n), dtype=bool)
    for i in range(n):
        for t_k in np.flatnonzero(post[:, i]):
            lo, hi = max(1, int(t_k) - p.psp_window), int(t_k) - int(p.t_ref)
            if lo <= hi:
                cover[lo:hi + 1, i] = True
    return cover


PARAMS = [NeuronParams(5.0), NeuronParams(3.0, 10.0, 3.0, 1), NeuronParams(4.0, 64.0, 8.0, 5, window=30)]


def _random_case(seed: int, B: int, dtype: torch.dtype):
    rng = np.random.default_rng(seed)
    p = PARAMS[seed % len(PARAMS)]
    T, n_in, n_out = 400, 24, 10
    post = np.stack([_bursty_post(rng, T, n_out, int(p.t_ref)) for _ in range(B)], 1)
    pre = rng.random((T, B, n_in)) < rng.choice([0.002, 0.01, 0.05], size=n_in)
    for j in range(n_in // 2):  # half of the inputs fire only where no window of some post neuron lies
        i = int(rng.integers(0, n_out))
        for b in range(B):
            free = np.flatnonzero(~_window_cover(post[:, b], p)[:, i])
            pre[:, b, j] = False
            if post[:, b, i].any():
                pre[rng.choice(free, size=min(4, free.size), replace=False), b, j] = True
    w = torch.from_numpy(rng.uniform(-0.5, 1.0, (n_out, n_in))).to(dtype)
    delta = torch.from_numpy(rng.normal(0, 5, (B, n_out))).to(dtype)
    return p, torch.from_numpy(post).to(dtype), torch.from_numpy(pre).to(dtype), w, delta


def _zero_pairs(post: torch.Tensor, pre: torch.Tensor, p: NeuronParams) -> np.ndarray:
    """[N_out, N_in] bool: in every sample, input j is silent or post i fired and every spike of j lies
    outside all of i's windows, so e_{i|j} = 0 in every sample and the gradient is exactly 0."""
    _, B, n_out = post.shape
    zero = np.ones((n_out, pre.shape[2]), dtype=bool)
    for b in range(B):
        cover = _window_cover(post[:, b].numpy() > 0, p)
        inside = cover.T.astype(np.int64) @ (pre[:, b].numpy() > 0).astype(np.int64) > 0  # [N_out, N_in]
        silent_pre = pre[:, b].sum(0).numpy() == 0
        fired = post[:, b].sum(0).numpy() > 0
        zero &= silent_pre[None, :] | (fired[:, None] & ~inside)
    return zero


@pytest.mark.parametrize("seed", range(9))
@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_weights_with_all_pre_spikes_outside_every_window_get_exact_zero(
        monkeypatch: pytest.MonkeyPatch, seed: int, B: int, dtype: torch.dtype) -> None:
    p, post, pre, w, delta = _random_case(seed, B, dtype)
    zero = _zero_pairs(post, pre, p)
    active = (pre.sum(0) > 0).any(0).numpy()
    assert zero[:, active].sum() >= 10  # the case has pairs to check
    g_ref = sum(ref.fc_backward_ref(delta[b].double().numpy(), pre[:, b].numpy(), post[:, b].numpy(),
                                    w.double().numpy(), p.v_th, tau_m=p.tau_m, tau_s=p.tau_s,
                                    t_ref=int(p.t_ref))[0] for b in range(B)) if p.window is None else None
    results = {}
    for below in (False, True):  # batch 1 without an error below takes the per-row kernel
        if HAVE_C:
            events = spike_events(pre)
            assert events is not None
            results[f"events below={below}"] = linear_backward(
                delta, None, post, w, None, p, dtype=dtype, events=events, need_delta_below=below,
                psp_drive=torch.zeros(B, w.shape[0], dtype=F64)).weight
            results[f"dense+compiled C̃ below={below}"] = linear_backward(
                delta, pre, post, w, torch.zeros_like(post), p, dtype=dtype, need_delta_below=below).weight
    with monkeypatch.context() as m:
        m.setenv("HM2BP_BACKEND", "torch")
        results["torch"] = linear_backward(delta, pre, post, w, torch.zeros_like(post), p, dtype=dtype).weight
    for name, grad in results.items():
        assert np.all(grad.numpy()[zero] == 0), (name, grad.numpy()[zero][grad.numpy()[zero] != 0][:5])
    if g_ref is not None:  # (the reference has no window option: it always uses 4·τ_m)
        assert np.all(g_ref[zero] == 0)  # σ differs (psp_drive = 0 above), the pattern of zeros does not
    if len(results) > 1:
        base = results["torch"]
        for name, grad in results.items():
            torch.testing.assert_close(grad, base, rtol=1e-5 if dtype == F32 else 1e-12,
                                       atol=1e-4 if dtype == F32 else 1e-10, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("seed", range(3))
def test_psp_coefficients_are_exactly_zero_outside_every_window(monkeypatch: pytest.MonkeyPatch, backend: str,
                                                                 dtype: torch.dtype, seed: int) -> None:
    _backend(monkeypatch, backend)
    p, post, _, _, _ = _random_case(seed, 3, dtype)
    coeffs = psp.psp_coefficients(post, p, dtype)
    for b in range(post.shape[1]):
        cover = _window_cover(post[:, b].numpy() > 0, p)
        outside = coeffs[:, b].numpy()[~cover]
        assert np.all(outside == 0), outside[outside != 0][:5]
        assert (~cover).sum() > 1000 and np.abs(coeffs[:, b].numpy()[cover]).max() > 0.1


@pytest.mark.parametrize("seed", range(4))
def test_gradients_inside_the_windows_still_equal_reference(seed: int) -> None:
    """The reset of the filter only removes residuals: float64 gradients match the reference to 1e-12."""
    p, post, pre, w, delta = _random_case(3 * seed, 2, F64)  # PARAMS[0]: the reference's 4·τ_m window
    events = spike_events(pre) if HAVE_C else None
    drive = torch.einsum("tbj,ij->tbi", pre, w)
    fast = linear_backward(delta, pre, post, w, drive, p, dtype=F64, events=events,
                           psp_drive=None if events is None else psp.psp_coefficients(post, p, F64).mul(drive).sum(0))
    g_ref = np.zeros(w.shape)
    for b in range(post.shape[1]):
        g, d = ref.fc_backward_ref(delta[b].numpy(), pre[:, b].numpy(), post[:, b].numpy(), w.numpy(), p.v_th)
        g_ref += g
        assert fast.delta_below is not None
        np.testing.assert_allclose(fast.delta_below[b].numpy(), d, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fast.weight.numpy(), g_ref, rtol=1e-10, atol=1e-10)
    assert np.abs(g_ref).max() > 0.1
