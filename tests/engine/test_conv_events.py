"""The event-driven conv/pool path (functional/conv_events.py, kernels/cpu_conv.c) against the float64
reference (hm2bp.reference.hm2bp_ref) and the dense torch path.

Random conv nets with pools that do not divide their map, batches with more and fewer samples than
threads (channel blocks), and the edge cases of docs/algorithm.md §8.5: silent outputs and inputs, input spikes at
t = 0 and t = T−1, gaps longer than the 4·τ_m window (T = 700), pre spikes outside every window.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hm2bp.errors import NumericalError
from hm2bp.functional import conv_events
from hm2bp.functional.params import NeuronParams
from hm2bp.kernels import cpu_conv
from hm2bp.loss import rate_loss
from hm2bp.nn.layers import SpikingConv2d, SpikingPool2d, conv_stack_forward
from hm2bp.nn.network import build_network
from hm2bp.reference import hm2bp_ref as ref

pytestmark = pytest.mark.skipif(cpu_conv.library() is None, reason="no C compiler: compiled kernels unavailable")
F64 = torch.float64


@pytest.fixture
def threads():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _raster(gen: torch.Generator, T: int, B: int, C: int, H: int, W: int, p: float) -> torch.Tensor:
    """0/1 input spikes with the edge cases: a silent channel row, spikes at t = 0 and t = T − 1, and a long
    silent gap (> 4·τ_m) in the middle when T is long."""
    x = (torch.rand(T, B, C, H, W, generator=gen) < p).float()
    x[:, :, 0, 0, :] = 0
    x[0, :, :, 1, 1] = 1
    x[T - 1, :, :, 1, 2] = 1
    if T > 600:
        x[150:450] = 0
    return x


def _spikes_and_layer_grads(layer: torch.nn.Module, x: torch.Tensor, delta: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(output spikes, weight gradient or None, error below) of one layer on the event path, from a count
    error delta (loss Σ δ·o)."""
    xin = x.clone().requires_grad_(True)
    out = layer(xin)
    (out.sum(0) * delta.to(out.dtype)).sum().backward()
    grad = layer.weight.grad if isinstance(layer, SpikingConv2d) else None
    assert xin.grad is not None
    return out.detach(), grad, xin.grad[0].double()


@pytest.mark.parametrize("seed", range(6))
def test_conv_layer_equals_reference(seed: int, threads) -> None:  # type: ignore[no-untyped-def]
    threads([1, 2, 3][seed % 3])
    gen = torch.Generator().manual_seed(900 + seed)
    T = [120, 700][seed % 2]
    B, C, K, k, H, W = [1, 3][seed // 3], 2, 3, 3, 9, 8
    x = _raster(gen, T, B, C, H, W, 0.1)
    layer = SpikingConv2d(C, K, k, 3.0)
    with torch.no_grad():
        layer.weight.copy_(torch.empty(K, C, k, k).uniform_(-0.3, 0.8, generator=gen))
        layer.weight[1].uniform_(-0.5, -0.1, generator=gen)  # a silent output map
    delta = torch.randn(B, K, H - k + 1, W - k + 1, generator=gen, dtype=F64)
    out, grad, below = _spikes_and_layer_grads(layer, x, delta)
    w = layer.weight.detach().double().numpy()
    g_ref = np.zeros(w.shape)
    for b in range(B):
        s_ref = ref.conv_forward_ref(x[:, b].numpy(), w, 3.0, 0.0)
        np.testing.assert_array_equal(out[:, b].numpy().astype(bool), s_ref)
        g, d = ref.conv_backward_ref(delta[b].numpy(), x[:, b].numpy(), s_ref, w, 3.0)
        g_ref += g
        np.testing.assert_allclose(below[b].numpy(), d, rtol=2e-6, atol=1e-7)  # float32 error below
    assert grad is not None
    np.testing.assert_allclose(grad.double().numpy(), g_ref, rtol=1e-5, atol=1e-5)  # float32 gradient
    assert out.sum() > 30 and (out.sum(0) == 0).any()


@pytest.mark.parametrize("seed", range(4))
def test_conv_rule_in_double_equals_reference(seed: int, threads) -> None:  # type: ignore[no-untyped-def]
    """The kernel's own (float64) result against the reference to 1e-9: weights that float32 holds exactly."""
    threads([1, 2][seed % 2])
    gen = torch.Generator().manual_seed(950 + seed)
    T, B, C, K, k, H = [300, 700][seed % 2], [1, 2][seed // 2], 2, 4, 3, 8
    x = _raster(gen, T, B, C, H, H, 0.12)
    w = torch.empty(K, C, k, k).uniform_(-0.3, 0.8, generator=gen)
    w[1] = -w[1].abs()  # a silent output map
    p = NeuronParams(3.0, theta_eps=0.0)
    spec = conv_events.ConvLayerSpec(True, conv_events.conv_geometry(C, H, H, K, k), p, "conv")
    events = conv_events.input_events(x, "conv")
    assert events is not None
    _, u8, counts = conv_events._layer_forward(spec, events, w, True, False)
    assert counts is not None
    delta = torch.randn(B, K * (H - k + 1) ** 2, generator=gen, dtype=F64)
    grad, below = conv_events._layer_backward(spec, events, conv_events._index(u8), counts, w, delta, True)
    assert grad is not None and below is not None
    g_ref = np.zeros(w.shape)
    for b in range(B):
        g, d = ref.conv_backward_ref(delta[b].reshape(K, H - k + 1, -1).numpy(), x[:, b].numpy(),
                                     u8[:, b].numpy(), w.double().numpy(), 3.0)
        g_ref += g
        np.testing.assert_allclose(below[b].reshape(d.shape).numpy(), d, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(grad.numpy(), g_ref, rtol=1e-9, atol=1e-9)
    assert np.abs(g_ref).max() > 0.1


@pytest.mark.parametrize("seed", range(4))
def test_pool_layer_equals_reference(seed: int, threads) -> None:  # type: ignore[no-untyped-def]
    threads([1, 2][seed % 2])
    gen = torch.Generator().manual_seed(980 + seed)
    T, B, C, H, W, pool = [150, 700][seed % 2], [1, 3][seed // 2], 3, 7, 9, [2, 3][seed % 2]
    x = _raster(gen, T, B, C, H, W, 0.1)
    layer = SpikingPool2d(pool, 1.5)
    Hp, Wp = -(-H // pool), -(-W // pool)
    delta = torch.randn(B, C, Hp, Wp, generator=gen, dtype=F64)
    out, _, below = _spikes_and_layer_grads(layer, x, delta)
    for b in range(B):
        s_ref = ref.pool_forward_ref(x[:, b].numpy(), pool, 1.5, 1e-6)
        np.testing.assert_array_equal(out[:, b].numpy().astype(bool), s_ref)
        d = ref.pool_backward_ref(delta[b].numpy(), x[:, b].numpy(), s_ref, pool)
        np.testing.assert_allclose(below[b].numpy(), d, rtol=1e-6, atol=1e-7)  # float32 error below
    assert out.sum() > 20 and out.shape[-1] == Wp


def _small_net(seed: int, dtype: torch.dtype = torch.float32):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    # 13 -> conv3 11 -> pool2 6 (clipped) -> conv3 4 -> pool3 2 (clipped) -> FC
    net = build_network("13x13-4c3-p2-5c3-p3-12-4", [2.5, 1.5, 3.0, 1.5, 3.0, 3.0], backward_dtype=dtype,
                        generator=gen)
    with torch.no_grad():
        net.layers[0].weight.uniform_(-0.2, 0.9, generator=gen)
        net.layers[2].weight.uniform_(-0.2, 0.7, generator=gen)
    return net, gen


@pytest.mark.parametrize("batch", [1, 3])
def test_network_event_path_equals_dense_path(batch: int, monkeypatch: pytest.MonkeyPatch, threads) -> None:  # type: ignore[no-untyped-def]
    """Same spikes in every layer and the same gradients as the dense torch path (which forms the drive with
    a float32 conv2d: the σ numerators differ by its rounding)."""
    threads(2)
    results = []
    for dense in (False, True):
        net, gen = _small_net(11)
        x = _raster(gen, 200, batch, 1, 13, 13, 0.15)
        labels = torch.arange(batch) % 4
        if dense:
            monkeypatch.setattr(conv_events, "usable", lambda x, w: False)
        out = net(x, labels, record=True)
        rate_loss(out.sum(0), labels).backward()
        results.append(([s.clone() for s in net.hidden_spikes], [p.grad.clone() for p in net.parameters()]))
    (spikes_e, grads_e), (spikes_d, grads_d) = results
    for a, b in zip(spikes_e, spikes_d):
        assert torch.equal(a, b)
    for a, b in zip(grads_e, grads_d):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert all(s.sum() > 0 for s in spikes_e[:4]) and grads_e[0].abs().sum() > 0


@pytest.mark.parametrize("batch", [1, 4])
def test_conv_and_pool_results_do_not_depend_on_the_thread_count(batch: int, threads) -> None:  # type: ignore[no-untyped-def]
    """Channel blocks (fewer samples than threads) and sample items: the same bits for 1, 2 and 3 threads."""
    results = []
    for n in (1, 2, 3):
        threads(n)
        net, gen = _small_net(12)
        x = _raster(gen, 150, batch, 1, 13, 13, 0.15)
        delta = torch.randn(batch, 5, 2, 2, generator=gen, dtype=F64)
        xin = x.clone().requires_grad_(True)
        out = conv_stack_forward(list(net.layers)[:4], xin, None)
        assert out is not None
        (out.sum(0) * delta.float()).sum().backward()
        results.append([out, xin.grad, net.layers[0].weight.grad, net.layers[2].weight.grad])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
    assert results[0][2].abs().sum() > 0


def test_stack_equals_layers_one_by_one() -> None:
    net, gen = _small_net(13)
    x = _raster(gen, 120, 2, 1, 13, 13, 0.15)
    layers = list(net.layers)[:4]
    recorded: list[torch.Tensor] = []
    with torch.no_grad():
        stacked = conv_stack_forward(layers, x, recorded)
        y = x
        for layer, rec in zip(layers, recorded):
            y = layer(y)
            assert torch.equal(y, rec)
    assert stacked is not None and torch.equal(stacked, y)


def test_pre_spikes_outside_every_window_give_exact_zero() -> None:
    """A 1×1 conv on a 1×1 map is issue #13's reproduction: input 0 fires at t = 5…19, input 1 at 300…319,
    the output from ~306 on, so every spike of input 0 lies outside every window: its gradient is exactly 0."""
    T = 400
    x = torch.zeros(T, 1, 2, 1, 1)
    x[5:20, 0, 0] = 1
    x[300:320, 0, 1] = 1
    layer = SpikingConv2d(2, 1, 1, 5.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.1, 3.0]).reshape(1, 2, 1, 1))
    out, grad, _ = _spikes_and_layer_grads(layer, x, torch.ones(1, 1, 1, 1, dtype=F64))
    assert out.sum() > 3 and int(torch.nonzero(out[:, 0, 0, 0, 0])[0]) > 300
    assert grad is not None and grad[0, 0, 0, 0].item() == 0.0 and grad[0, 1, 0, 0].item() != 0.0


def test_non_finite_input_or_weights_are_refused() -> None:
    layer = SpikingConv2d(1, 2, 3, 2.0)
    x = torch.zeros(20, 1, 1, 6, 6)
    x[3, 0, 0, 2, 2] = float("nan")
    with pytest.raises(NumericalError, match="SpikingConv2d"):
        layer(x)
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(NumericalError, match="weights"):
        layer(torch.zeros(20, 1, 1, 6, 6))


def test_graded_input_takes_the_dense_path() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(60, 2, 1, 7, 7, generator=gen)  # graded values: not a spike raster
    layer = SpikingConv2d(1, 2, 3, 1.0)
    assert conv_stack_forward([layer], x, None) is None
    assert layer(x).shape == (60, 2, 2, 5, 5)
