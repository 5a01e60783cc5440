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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_event_driven_products_equal_dense(dtype: torch.dtype) -> None:
    from hm2bp.functional import events as ev

    gen = torch.Generator().manual_seed(11)
    spikes = (torch.rand(50, 3, 40, generator=gen) < 0.05).to(dtype)
    spikes[:, :, 5] = 0
    w = torch.randn(7, 40, generator=gen, dtype=dtype)
    coeffs = torch.randn(50, 3, 7, generator=gen, dtype=dtype)
    scale = torch.randn(3, 7, generator=gen, dtype=dtype)
    idx = ev.spike_events(spikes)
    assert idx is not None and int(idx.row_ptr[-1]) == int(spikes.sum())
    torch.testing.assert_close(idx.counts.to(dtype), spikes.sum(0))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    drive = ev.drive(spikes, w, None)
    torch.testing.assert_close(ev.drive(spikes, w, idx), drive, **tol)
    torch.testing.assert_close(ev.weight_gradient(spikes, coeffs, scale, idx),
                               ev.weight_gradient(spikes, coeffs, scale, None), **tol)
    torch.testing.assert_close(ev.spike_weighted_error(spikes, coeffs, scale, w, idx),
                               ev.spike_weighted_error(spikes, coeffs, scale, w, None), **tol)
    torch.testing.assert_close(ev.drive_weighted_sum(coeffs, None, w, idx),
                               ev.drive_weighted_sum(coeffs, drive, w, None), **tol)


def test_dense_spikes_use_the_dense_path() -> None:
    from hm2bp.functional import events as ev

    assert ev.spike_events(torch.ones(10, 2, 8)) is None
