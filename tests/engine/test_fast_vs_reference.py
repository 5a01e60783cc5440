"""The fast path (trace contractions, batched) against the slow float64 loop reference of the spec.

The reference (`hm2bp.reference.hm2bp_ref`) is an independent transcription of docs/algorithm.md §1–§4 with pair
loops; it shares no helper with the fast path. Random cases are seeded; edge cases follow docs/algorithm.md §8.5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hm2bp.functional.autograd import conv_drive, linear_drive
from hm2bp.functional.events import spike_events
from hm2bp.functional.hm2bp import (
    conv_backward,
    insert_label_spikes,
    lateral_factor,
    linear_backward,
    output_rules,
    pool_backward,
)
from hm2bp.functional.params import NeuronParams
from hm2bp.functional.psp import psp_matrix
from hm2bp.loss import rate_loss, softmax_loss, weight_regularizer
from hm2bp.nn.layers import SpikingConv2d, SpikingLinear, SpikingPool2d
from hm2bp.nn.network import build_network
from hm2bp.reference import hm2bp_ref as ref

F64 = torch.float64


def random_post_train(rng: np.random.Generator, T: int, rate: float, t_ref: int = 2) -> np.ndarray:
    """A spike train that respects the refractory gap (≥ T_ref + 1 steps), like every LIF output."""
    s = np.zeros(T, dtype=bool)
    t = int(rng.integers(0, 4))
    while t < T:
        if rng.random() < rate:
            s[t] = True
            t += t_ref + 1 + int(rng.geometric(0.3)) - 1
        else:
            t += 1
    return s


def random_case(seed: int, T: int, n_post: int, n_pre: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    post = np.stack([random_post_train(rng, T, rng.choice([0.0, 0.02, 0.1, 0.5])) for _ in range(n_post)], 1)
    pre = rng.random((T, n_pre)) < rng.choice([0.01, 0.05, 0.3], size=n_pre)
    pre[:, 0] = False  # a silent pre neuron
    return post, pre


# ---------------------------------------------------------------------------------------------- S-PSP


@pytest.mark.parametrize("seed", range(40))
def test_psp_equals_pair_loop_random(seed: int) -> None:
    T = [60, 300, 700][seed % 3]
    post, pre = random_case(seed, T, 5, 6)
    p = NeuronParams(5.0)
    fast = psp_matrix(torch.from_numpy(post).unsqueeze(1), torch.from_numpy(pre).unsqueeze(1), p, F64)[0].numpy()
    slow = ref.psp_matrix_ref(post, pre)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)


def _psp_fast(post_times: list[int], pre_times: list[int], T: int) -> float:
    post = torch.zeros(T, 1, 1)
    pre = torch.zeros(T, 1, 1)
    post[post_times, 0, 0] = 1
    pre[pre_times, 0, 0] = 1
    return float(psp_matrix(post, pre, NeuronParams(5.0), F64)[0, 0, 0])


@pytest.mark.parametrize(
    "post_times,pre_times",
    [
        ([], [5, 9]),  # silent post, active pre: 0.1
        ([20], []),  # silent pre: 0
        ([1], [0]),  # a spike at t = 0 on both sides
        ([0, 5], [0, 1, 2, 3]),
        ([299], [0, 297, 298, 299]),  # spikes at T − 1
        ([20, 290], [10, 30]),  # gap longer than the 4·τ_m window
        ([300 - 1], [299 - 256, 299 - 257]),  # window edge: 256 steps back counts, 257 does not
        ([10, 13, 16, 19, 22], [1, 2, 3, 8, 9, 10, 11, 12, 14, 17, 20]),  # refractory-limited burst
        ([50, 120, 200], list(range(1, 300, 7))),  # reset branch (pre before the previous post spike)
        ([2], [0]),  # the only pre spike falls at t = 0 (excluded by the window)
    ],
)
def test_psp_edge_cases(post_times: list[int], pre_times: list[int]) -> None:
    fast = _psp_fast(post_times, pre_times, 300)
    slow = ref.psp_pair_ref(post_times, pre_times, tau_m=64.0, tau_s=8.0, t_ref=2)
    assert fast == pytest.approx(slow, rel=1e-12, abs=1e-14)


def test_psp_kernel_value_from_the_spec() -> None:
    """docs/algorithm.md §2 note: at Δt = 10 the code's kernel is ε(8) = 0.588."""
    assert _psp_fast([20], [10], 40) == pytest.approx(0.5881342, abs=1e-6)


# ----------------------------------------------------------------------------------------- forward


def _spiky_weights(gen: torch.Generator, n_out: int, n_in: int, low: float = -0.5, high: float = 1.0) -> torch.Tensor:
    return torch.empty(n_out, n_in).uniform_(low, high, generator=gen)


@pytest.mark.parametrize("seed", range(4))
def test_linear_forward_equals_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    T, B, n_in, n_out = 200, 3, 20, 7
    x = (torch.rand(T, B, n_in, generator=gen) < 0.1).float()
    layer = SpikingLinear(n_in, n_out, 4.0, lateral_inhibition=1.0 if seed % 2 else None, output=True)
    with torch.no_grad():
        layer.weight.copy_(_spiky_weights(gen, n_out, n_in))
        out = layer(x)
    lat = None if layer.lateral_weight is None else layer.lateral_weight.numpy()
    for b in range(B):
        expected = ref.fc_forward_ref(x[:, b].numpy(), layer.weight.detach().numpy(), 4.0, 1e-6, lateral=lat)
        np.testing.assert_array_equal(out[:, b].numpy().astype(bool), expected)
    assert out.sum() > 50


def test_conv_and_pool_forward_equal_reference() -> None:
    gen = torch.Generator().manual_seed(7)
    T, B = 120, 2
    x = (torch.rand(T, B, 2, 11, 11, generator=gen) < 0.15).float()
    conv = SpikingConv2d(2, 3, 3, 3.0)
    pool = SpikingPool2d(2, 1.5)
    with torch.no_grad():
        conv.weight.copy_(torch.empty(3, 2, 3, 3).uniform_(-0.3, 0.8, generator=gen))
        c = conv(x)
        pl = pool(c)
    for b in range(B):
        c_ref = ref.conv_forward_ref(x[:, b].numpy(), conv.weight.detach().numpy(), 3.0, 0.0)
        np.testing.assert_array_equal(c[:, b].numpy().astype(bool), c_ref)
        p_ref = ref.pool_forward_ref(c_ref, 2, 1.5, 1e-6)
        np.testing.assert_array_equal(pl[:, b].numpy().astype(bool), p_ref)
    assert c.sum() > 100 and pl.sum() > 20 and pl.shape[-1] == 5  # ceil(9/2): a clipped window


# ---------------------------------------------------------------------------------------- backward


def _linear_case(seed: int, T: int = 250, B: int = 3, n_in: int = 14, n_out: int = 6):
    gen = torch.Generator().manual_seed(100 + seed)
    x = (torch.rand(T, B, n_in, generator=gen) < 0.08).double()
    x[:, :, 0] = 0  # a silent input
    w = _spiky_weights(gen, n_out, n_in).double()
    p = NeuronParams(5.0)
    drive = linear_drive(x, w)
    from hm2bp.functional.neuron import simulate_lif

    out = simulate_lif(drive, p)
    out[:, :, 1] = 0  # a silent output neuron
    delta = torch.randn(B, n_out, generator=gen, dtype=F64) * 10
    return x, w, p, drive, out, delta


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("effect_ratio", [True, False])
@pytest.mark.parametrize("event_driven", [False, True])
def test_linear_backward_equals_reference(seed: int, effect_ratio: bool, event_driven: bool) -> None:
    x, w, p, drive, out, delta = _linear_case(seed)
    events = spike_events(x) if event_driven else None
    if event_driven and events is None:
        pytest.skip("compiled event kernels unavailable (no C compiler)")
    lam = torch.rand(delta.shape, generator=torch.Generator().manual_seed(seed), dtype=F64) + 0.5 if seed % 2 else None
    fast = linear_backward(delta, x, out, w, drive, p, lateral=lam, effect_ratio=effect_ratio, dtype=F64, events=events)
    grad_sum = np.zeros(w.shape)
    for b in range(x.shape[1]):
        g_ref, d_ref = ref.fc_backward_ref(
            delta[b].numpy(), x[:, b].numpy(), out[:, b].numpy(), w.numpy(), 5.0,
            effect_ratio=effect_ratio, lateral_factor=None if lam is None else lam[b].numpy(),
        )
        grad_sum += g_ref
        np.testing.assert_allclose(fast.delta_below[b].numpy(), d_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fast.weight.numpy(), grad_sum, rtol=1e-9, atol=1e-9)
    assert out.sum(0).gt(0).sum() >= 3  # several active post neurons, plus the silent one


@pytest.mark.parametrize("seed", range(6))
def test_lateral_factor_and_insertion_equal_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(200 + seed)
    T, B, n = 300, 4, 5
    rng = np.random.default_rng(seed)
    spikes = np.stack([np.stack([random_post_train(rng, T, r) for r in (0.0, 0.05, 0.1, 0.02, 0.0)], 1) for _ in range(B)], 1)
    labels = torch.randint(0, n, (B,), generator=gen)
    s = torch.from_numpy(spikes).double()
    lam = lateral_factor(s, labels, NeuronParams(8.0))
    inserted = insert_label_spikes(s, labels, 35)
    rules = output_rules(s.to(torch.uint8), labels, NeuronParams(8.0), 1.0, 35)  # the compiled pass on the CPU
    assert rules.lateral is not None and rules.spikes.dtype == torch.uint8
    for b in range(B):
        lam_ref = ref.lateral_factor_ref(spikes[:, b], int(labels[b]), 8.0)
        inserted_ref = ref.insert_spikes_ref(spikes[:, b], int(labels[b]))
        np.testing.assert_allclose(lam[b].numpy(), lam_ref, rtol=1e-10)
        np.testing.assert_allclose(rules.lateral[b].numpy(), lam_ref, rtol=1e-10)
        np.testing.assert_array_equal(inserted[:, b].numpy().astype(bool), inserted_ref)
        np.testing.assert_array_equal(rules.spikes[:, b].numpy().astype(bool), inserted_ref)
    assert rules.inserted == bool((rules.spikes != s.to(torch.uint8)).any())


@pytest.mark.parametrize("loss", ["rate", "softmax"])
@pytest.mark.parametrize("seed", range(3))
def test_two_layer_network_gradients_equal_reference(loss: str, seed: int) -> None:
    """A hidden + output (lateral inhibition) stack through autograd against the reference chain."""
    gen = torch.Generator().manual_seed(300 + seed)
    T, B, n_in, n_hid, n_out = 300, 3, 16, 12, 4
    net = build_network(f"{n_in}-{n_hid}-{n_out}", [4.0, 3.0], backward_dtype=F64)
    with torch.no_grad():
        net.layers[0].weight.copy_(_spiky_weights(gen, n_hid, n_in))
        net.layers[1].weight.copy_(_spiky_weights(gen, n_out, n_hid, -0.3, 0.6))
    x = (torch.rand(T, B, n_in, generator=gen) < 0.1).float()
    labels = torch.randint(0, n_out, (B,), generator=gen)
    out = net(x, labels, record=True)
    counts = out.sum(0)
    data_loss = rate_loss(counts, labels) if loss == "rate" else softmax_loss(counts, labels)
    (data_loss + weight_regularizer(net, 10.0, 0.04)).backward()

    hidden = net.hidden_spikes[0]
    w_h = net.layers[0].weight.detach().double().numpy()
    w_o = net.layers[1].weight.detach().double().numpy()
    g_h = np.zeros_like(w_h)
    g_o = np.zeros_like(w_o)
    for b in range(B):
        kwargs = dict(loss=loss, lateral=True, effect_ratio=True)
        go, d_below = ref.output_backward_ref(
            out[:, b].detach().numpy(), hidden[:, b].numpy(), w_o, 3.0, int(labels[b]), **kwargs
        )
        gh, _ = ref.fc_backward_ref(d_below, x[:, b].numpy(), hidden[:, b].numpy(), w_h, 4.0)
        g_o += go / B
        g_h += gh / B
    g_h += ref.regularizer_grad_ref(w_h, 10.0, 0.04)
    g_o += ref.regularizer_grad_ref(w_o, 10.0, 0.04)
    # The forward runs in float32, the rule in float64: agreement to float32 rounding of the weights.
    np.testing.assert_allclose(net.layers[0].weight.grad.double().numpy(), g_h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.layers[1].weight.grad.double().numpy(), g_o, rtol=1e-5, atol=1e-5)
    assert hidden.sum() > 100 and np.abs(g_h).max() > 0.1


@pytest.mark.parametrize("seed", range(3))
def test_conv_backward_equals_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(400 + seed)
    T, B, C, K, k, H = 150, 2, 2, 3, 3, 8
    x = (torch.rand(T, B, C, H, H, generator=gen) < 0.12).double()
    w = torch.empty(K, C, k, k).uniform_(-0.3, 0.8, generator=gen).double()
    p = NeuronParams(3.0, theta_eps=0.0)
    from hm2bp.functional.neuron import simulate_lif

    x[:, :, 0, 0, :] = 0  # silent inputs
    drive = conv_drive(x, w)
    out = simulate_lif(drive, p)
    out[:, :, 1, :2, :] = 0  # silent outputs (the rule is a function of the rasters)
    delta = torch.randn(B, K, H - k + 1, H - k + 1, generator=gen, dtype=F64)
    fast = conv_backward(delta, x, out, w, drive, p, dtype=F64)
    g_sum = np.zeros(w.shape)
    for b in range(B):
        g, d = ref.conv_backward_ref(delta[b].numpy(), x[:, b].numpy(), out[:, b].numpy(), w.numpy(), 3.0)
        g_sum += g
        np.testing.assert_allclose(fast.delta_below[b].numpy(), d, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fast.weight.numpy(), g_sum, rtol=1e-9, atol=1e-9)
    assert out.sum() > 50 and (out.sum(0) == 0).any()


@pytest.mark.parametrize("seed", range(3))
def test_pool_backward_equals_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(500 + seed)
    T, B, C, H = 150, 2, 2, 7
    x = (torch.rand(T, B, C, H, H, generator=gen) < 0.1).double()
    p = NeuronParams(1.5)
    from hm2bp.functional.autograd import pool_drive
    from hm2bp.functional.neuron import simulate_lif

    out = simulate_lif(pool_drive(x, 2), p)
    delta = torch.randn(B, C, 4, 4, generator=gen, dtype=F64)
    fast = pool_backward(delta, x, out, 2, p, F64)
    for b in range(B):
        expected = ref.pool_backward_ref(delta[b].numpy(), x[:, b].numpy(), out[:, b].numpy(), 2)
        np.testing.assert_allclose(fast[b].numpy(), expected, rtol=1e-9, atol=1e-12)
    assert out.sum() > 20


def test_minibatch_gradient_is_mean_of_per_sample_gradients() -> None:
    gen = torch.Generator().manual_seed(600)
    T, B = 200, 4
    net = build_network("10-8-3", [3.0, 3.0], backward_dtype=F64, generator=gen)
    x = (torch.rand(T, B, 10, generator=gen) < 0.15).float()
    labels = torch.randint(0, 3, (B,), generator=gen)
    rate_loss(net(x, labels).sum(0), labels).backward()
    batch_grads = [p.grad.clone() for p in net.parameters()]
    singles = [torch.zeros_like(g) for g in batch_grads]
    for b in range(B):
        net.zero_grad()
        rate_loss(net(x[:, b : b + 1], labels[b : b + 1]).sum(0), labels[b : b + 1]).backward()
        for acc, p_ in zip(singles, net.parameters()):
            acc += p_.grad / B
    for g_batch, g_single in zip(batch_grads, singles):
        torch.testing.assert_close(g_batch, g_single, rtol=1e-5, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in batch_grads)


def test_backward_is_linear_in_the_output_error() -> None:
    x, w, p, drive, out, delta = _linear_case(0)
    a = linear_backward(delta, x, out, w, drive, p, dtype=F64)
    b = linear_backward(-2.5 * delta, x, out, w, drive, p, dtype=F64)
    torch.testing.assert_close(b.weight, -2.5 * a.weight)
    torch.testing.assert_close(b.delta_below, -2.5 * a.delta_below)
