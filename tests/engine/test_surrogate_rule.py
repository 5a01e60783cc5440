"""The surrogate-gradient BPTT rule runs the same neuron: identical spikes, a working gradient."""

from __future__ import annotations

import pytest
import torch

from hm2bp.errors import ConfigError
from hm2bp.loss import rate_loss
from hm2bp.nn.network import build_network


@pytest.mark.parametrize("arch,thresholds", [("20-16-4", [3.0, 2.0]), ("10x10-3c3-p2-6-3", [2.0, 1.0, 2.0, 2.0])])
def test_bptt_forward_equals_hm2bp_forward(arch: str, thresholds: list[float]) -> None:
    gen = torch.Generator().manual_seed(0)
    a = build_network(arch, thresholds, generator=gen)
    b = build_network(arch, thresholds, rule="bptt")
    b.load_state_dict(a.state_dict())
    n_in = 20 if arch.startswith("20") else 100
    x = (torch.rand(120, 3, n_in, generator=gen) < 0.2).float()
    with torch.no_grad():
        out_a = a(x, record=True)
        out_b = b(x, record=True)
    for sa, sb in zip(a.hidden_spikes, b.hidden_spikes):
        assert torch.equal(sa, sb)
    assert torch.equal(out_a, out_b) and out_a.sum() > 0


def test_bptt_gradient_flows_and_lowers_the_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    net = build_network("20-16-4", [3.0, 2.0], rule="bptt", generator=gen)
    x = (torch.rand(100, 8, 20, generator=gen) < 0.2).float()
    labels = torch.randint(0, 4, (8,), generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=5e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = rate_loss(net(x, labels).sum(0), labels)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.85 * losses[0], losses


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ConfigError, match="learning rule"):
        build_network("4-2", [1.0], rule="stdp")
