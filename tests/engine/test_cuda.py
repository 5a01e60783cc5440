"""The same network on CUDA and on the CPU: same spikes, same HM2-BP gradients (runs only with a GPU)."""

from __future__ import annotations

import copy

import pytest
import torch

from hm2bp.loss import rate_loss
from hm2bp.nn.network import build_network

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("arch,thresholds", [("64-20-10", [3, 3]), ("8x8-4c3-p2-10", [2, 2, 3])])
def test_cuda_matches_cpu(arch: str, thresholds: list[float]) -> None:
    g = torch.Generator().manual_seed(0)
    cpu_net = build_network(arch, thresholds, generator=g)
    with torch.no_grad():  # weights on a 1/64 grid: every input current is exact, whatever the summation order
        for p in cpu_net.parameters():
            p.copy_(torch.round(p * 64) / 64)
    gpu_net = copy.deepcopy(cpu_net).cuda()
    x = (torch.rand(60, 4, 64, generator=g) < 0.2).float()
    labels = torch.tensor([0, 3, 7, 9])
    out_cpu = cpu_net(x, labels)
    out_gpu = gpu_net(x.cuda(), labels.cuda())
    assert out_cpu.sum() > 0
    assert torch.equal(out_cpu, out_gpu.cpu())
    rate_loss(out_cpu.sum(0), labels, desired=10, undesired=2, margin=1).backward()
    rate_loss(out_gpu.sum(0), labels.cuda(), desired=10, undesired=2, margin=1).backward()
    for a, b in zip(cpu_net.parameters(), gpu_net.parameters()):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-4, atol=1e-5)
