"""Consecutive FC layers run as one autograd node (compact spikes in between) give exactly the spikes
and gradients of the same layers run one by one."""

from __future__ import annotations

import pytest
import torch

from hm2bp.errors import NumericalError
from hm2bp.kernels import cpu
from hm2bp.loss import rate_loss
from hm2bp.nn.network import build_network

pytestmark = [
    pytest.mark.skipif(cpu.library() is None, reason="no C compiler: compiled kernels unavailable"),
    pytest.mark.filterwarnings("ignore::hm2bp.errors.LateralGainWarning"),  # random weights
]


def _net_and_input(seed: int, arch: str = "30-25-20-6"):
    gen = torch.Generator().manual_seed(seed)
    net = build_network(arch, [1.5] * arch.count("-"), generator=gen)
    x = (torch.rand(160, 4, 30, generator=gen) < 0.15).float()
    labels = torch.randint(0, 6, (4,), generator=gen)
    return net, x, labels


def _layer_by_layer(net, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    for i, layer in enumerate(net.layers):
        x = layer(x, labels) if i == len(net.layers) - 1 else layer(x)
    return x


@pytest.mark.parametrize("seed", range(3))
def test_stack_equals_layer_by_layer(seed: int) -> None:
    net, x, labels = _net_and_input(seed)
    x.requires_grad_(True)
    out = net(x, labels, record=True)
    rate_loss(out.sum(0), labels).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    grad_x = x.grad.clone()
    hidden = [h.clone() for h in net.hidden_spikes]
    assert len(hidden) == 3 and all(h.dtype == torch.float32 for h in hidden)
    assert all(h.sum() > 0 for h in hidden)

    net.zero_grad()
    x.grad = None
    ref = _layer_by_layer(net, x, labels)
    rate_loss(ref.sum(0), labels).backward()
    assert torch.equal(out, ref)
    for g, p in zip(grads, net.parameters()):
        assert torch.equal(g, p.grad)  # bit-identical
        assert g.abs().sum() > 0
    assert torch.equal(grad_x, x.grad)


def test_stack_without_gradients_and_with_bad_input() -> None:
    net, x, labels = _net_and_input(5)
    with torch.no_grad():
        out = net(x)
    assert torch.equal(out, _layer_by_layer(net, x, labels).detach())
    with pytest.raises(ValueError, match=r"layers\.0.*no time steps"):
        net(x[:0], labels)
    x[7, 1, 3] = float("nan")
    with pytest.raises(NumericalError, match=r"layers\.0.*time steps \[7\]"):
        net(x, labels)
