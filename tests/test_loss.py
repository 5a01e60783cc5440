"""The logged cost's counts (docs/algorithm.md §3.1: read after the spike insertion of §3.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hm2bp.loss import counts_as_logged, rate_loss
from hm2bp.reference.hm2bp_ref import insert_spikes_ref


@pytest.mark.parametrize("T", [400, 450, 540, 658, 1544, 36])
def test_logged_counts_are_those_after_spike_insertion(T: int) -> None:
    gen = torch.Generator().manual_seed(T)
    spikes = (torch.rand(T, 5, 10, generator=gen) < 0.02).numpy()
    labels = torch.tensor([3, 0, 9, 3, 7])
    spikes[:, 0, 3] = False  # silent label neurons: samples 0 and 2
    spikes[:, 2, 9] = False
    spikes[5, 1, 0] = True   # a label neuron that fired: unchanged
    expected = np.stack([insert_spikes_ref(spikes[:, b], int(labels[b])).sum(0) for b in range(5)])
    counts = torch.from_numpy(spikes.sum(0)).float()
    logged = counts_as_logged(counts, labels, T)
    assert torch.equal(logged, torch.from_numpy(expected).float())
    assert torch.equal(counts, torch.from_numpy(spikes.sum(0)).float())  # the input is left alone
    if T == 400:  # docs/algorithm.md §3.2: T = 400 inserts 36 spikes; |36 − 35| ≤ 5 adds nothing to the cost
        assert logged[0, 3] == 36
        per_sample = rate_loss(logged, labels, reduction="none")
        assert per_sample[0] < rate_loss(counts, labels, reduction="none")[0]


def test_logged_counts_without_insertion() -> None:
    counts = torch.zeros(2, 4)
    labels = torch.tensor([1, 2])
    assert torch.equal(counts_as_logged(counts, labels, 20), counts)  # T < DESIRED_LEVEL: nothing inserted
    assert counts_as_logged(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 400).shape == (0, 4)


def test_weight_regularizer_value_has_no_constant_and_the_paper_gradient() -> None:
    """#17 item 6: the printed loss of the README example was ~2.4e7, the constant λ·N_in·L/2·exp(−β) per
    neuron. R is 0 at zero weights, its value is λ(N_in L/2)·Σ_i[exp(β(S_i−1)) − exp(−β)] and its gradient
    is still the authors' λβ(w/L)exp(β(S_i−1))."""
    import math

    import torch

    from hm2bp.loss import weight_regularizer
    from hm2bp.nn.network import build_network

    net = build_network("784-800-10", thresholds=[20, 8], generator=torch.Generator().manual_seed(0))
    lam, beta, limit = 10.0, 0.04, 8.0
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    assert float(weight_regularizer(net, lam, beta, limit).detach()) == 0.0
    net = build_network("784-800-10", thresholds=[20, 8], generator=torch.Generator().manual_seed(0))
    reg = weight_regularizer(net, lam, beta, limit)
    reg.backward()
    want, grads = 0.0, []
    for layer in (net.layers[0], net.layers[1]):
        w = layer.weight.detach().double()
        s = (w / limit).square().mean(1)
        want += lam * w.shape[1] * limit / 2 * float((torch.exp(beta * (s - 1)) - math.exp(-beta)).sum())
        grads.append((layer.weight.grad.double(), lam * beta * (w / limit) * torch.exp(beta * (s - 1)).unsqueeze(1)))
    assert float(reg.detach()) == pytest.approx(want, rel=1e-5) and float(reg.detach()) < 1e5  # not ~2.4e7
    for got, ref in grads:
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-9)
