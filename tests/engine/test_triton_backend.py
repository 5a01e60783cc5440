"""The Triton backend against the torch twin: forward spikes bit for bit, S-PSP coefficients and gradients within
float tolerance.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, set here before
triton is imported), at small sizes (T ≤ 64, tens of neurons, batch ≤ 4). On a machine with CUDA and without
``TRITON_INTERPRET`` the same tests run compiled on the GPU (``pytest -m cuda``); the torch twin always runs on
the CPU copy, so the GPU is checked against the same mirror.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from hm2bp.functional.params import NeuronParams
from hm2bp.kernels import backend as seam
from hm2bp.kernels.backend import get_backend

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = [
    pytest.param("cpu", marks=[pytest.mark.triton,
                               pytest.mark.skipif(not INTERPRETED, reason="CPU tensors need TRITON_INTERPRET=1")]),
    pytest.param("cuda", marks=[pytest.mark.triton, pytest.mark.cuda, pytest.mark.skipif(
        INTERPRETED or not torch.cuda.is_available(), reason="needs CUDA without TRITON_INTERPRET")]),
]
PARAMS = [NeuronParams(3.0), NeuronParams(2.5, tau_m=20.0, tau_s=5.0, t_ref=3), NeuronParams(2.0, tau_m=10.0,
                                                                                             tau_s=3.0, t_ref=0,
                                                                                             window=9)]


@pytest.fixture(scope="module")
def triton_backend():  # type: ignore[no-untyped-def]
    return get_backend("triton")


def _torch() -> seam.Backend:
    return get_backend("torch")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", PARAMS, ids=["paper", "tau20-5-ref3", "tau10-3-ref0-win9"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lif_scan_spikes_bit_identical(triton_backend, device: str, p: NeuronParams, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(int(p.tau_m) + (dtype == torch.float64))
    drive = (torch.rand(64, 4, 30, generator=gen) * 1.5 - 0.2).to(dtype)
    expected = _torch().lif_scan(drive, p, None)
    got = triton_backend.lif_scan(drive.to(device), p, None)
    assert got.dtype == dtype and got.shape == drive.shape
    assert torch.equal(got.cpu(), expected)
    assert 200 < int(expected.sum()) < expected.numel() // 2  # the test sees spikes and silence


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("graded", [False, True], ids=["output-inhibition", "graded"])
def test_lif_scan_lateral_bit_identical(triton_backend, device: str, graded: bool) -> None:
    """The output layer's lateral inhibition (−w0 off the diagonal) and graded recurrent weights: the lateral
    current is summed in the C kernel's (and torch's) order, so the spikes are equal bit for bit."""
    gen = torch.Generator().manual_seed(7 + graded)
    n = 12
    drive = torch.rand(40, 3, n, generator=gen) * 2.0 - 0.2
    lateral = torch.randn(n, n, generator=gen) if graded else -1.0 * (1.0 - torch.eye(n))
    p = NeuronParams(4.0, tau_m=20.0, tau_s=5.0, t_ref=1)
    expected = _torch().lif_scan(drive, p, lateral)
    got = triton_backend.lif_scan(drive.to(device), p, lateral.to(device))
    assert torch.equal(got.cpu(), expected)
    assert int(expected.sum()) > 40


def _spike_train(T: int, m: int, rate: float, seed: int) -> torch.Tensor:
    """0/1 spikes ``[T, m]`` with none at t = 0 (the LIF cannot fire there) and bursts next to long gaps."""
    gen = torch.Generator().manual_seed(seed)
    s = (torch.rand(T, m, generator=gen) < rate).float()
    s[0] = 0
    s[:, 0] = 0  # a silent neuron
    s[1:4, 1] = 1  # a burst at the very start
    s[T - 1, 2] = 1  # a spike at the last step
    return s


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", PARAMS, ids=["paper", "tau20-5-ref3", "tau10-3-ref0-win9"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_psp_coefficients_match_torch(triton_backend, device: str, p: NeuronParams, dtype: torch.dtype) -> None:
    spikes = _spike_train(64, 40, 0.12, seed=int(p.tau_m))
    expected = _torch().psp_coefficients(spikes, p, dtype)
    got = triton_backend.psp_coefficients(spikes.to(device).to(torch.uint8), p, dtype)
    assert got.dtype == dtype
    tol = 2e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got.cpu(), expected, rtol=tol, atol=tol)
    assert float(expected.abs().max()) > 0.1
    # exactly 0 outside every post spike's window [max(1, t_k − window), t_k − T_ref] (issue 13 item 4)
    outside = torch.ones_like(spikes, dtype=torch.bool)
    for t_k, col in spikes.nonzero().tolist():
        outside[max(1, t_k - p.psp_window): max(0, t_k - p.t_ref + 1), col] = False
    assert int(outside[:, 3:].sum()) > 0 and not bool(got.cpu()[outside].any())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("v_th,strength", [(8.3, 1.0), (8.0, None), (0.5, 2.1)], ids=["w0=1", "no-lateral", "unstable"])
def test_output_rules_match_torch(triton_backend, device: str, v_th: float, strength: float | None) -> None:
    """docs/algorithm.md §3.2 insertion (bit for bit) and §3.4 Λ (float64 tolerance), flags included."""
    gen = torch.Generator().manual_seed(5)
    spikes = (torch.rand(48, 4, 10, generator=gen) < 0.1).float()
    spikes[0] = 0
    spikes[:, 1, 3] = 0  # silent label neurons get spikes inserted
    spikes[:, 2, 5] = 0
    labels = torch.tensor([1, 3, 5, 7])
    p = NeuronParams(v_th)
    expected = _torch().output_rules(spikes, labels, p, strength, 4)
    got = triton_backend.output_rules(spikes.to(device), labels.to(device), p, strength, 4)
    assert torch.equal(got.spikes.cpu(), expected.spikes) and expected.inserted
    assert (got.inserted, got.unstable) == (expected.inserted, expected.unstable)
    assert expected.unstable == (v_th < 1)
    if strength is None:
        assert got.lateral is None and expected.lateral is None
    else:
        torch.testing.assert_close(got.lateral.cpu(), expected.lateral, rtol=1e-12, atol=1e-12, equal_nan=True)
    with pytest.raises(ValueError, match="class indices"):
        triton_backend.output_rules(spikes.to(device), torch.tensor([0, 1, 2, 10]).to(device), p, strength, 4)


def _train_step(arch: str, thresholds: list[float], T: int, batch: int, backend: str, device: str
                ) -> dict[str, torch.Tensor]:
    from hm2bp.loss import rate_loss
    from hm2bp.nn.network import build_network

    gen = torch.Generator().manual_seed(3)
    net = build_network(arch, thresholds, generator=gen)
    n_in = 1
    for d in net.input_shape:
        n_in *= d
    x = (torch.rand(T, batch, n_in, generator=gen) < 0.15).float()
    labels = torch.arange(batch) % 10
    before = os.environ.get("HM2BP_BACKEND")
    os.environ["HM2BP_BACKEND"] = backend
    try:
        net = net.to(device)
        out = net(x.to(device), labels.to(device), record=True)
        rate_loss(out.sum(0), labels.to(device)).backward()
    finally:
        if before is None:
            os.environ.pop("HM2BP_BACKEND")
        else:
            os.environ["HM2BP_BACKEND"] = before
    result = {f"spikes{i}": s.cpu() for i, s in enumerate(net.hidden_spikes)}
    result.update({name: prm.grad.cpu() for name, prm in net.named_parameters() if prm.grad is not None})
    return result


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch,thresholds", [("60-25-10", [3.0, 3.0]), ("10x10-3c3-p2-10", [1.0, 0.5, 2.0])],
                         ids=["fc", "cnn"])
def test_training_step_matches_torch_backend(device: str, arch: str, thresholds: list[float]) -> None:
    """A whole HM2-BP step (forward, output rules, backward) with HM2BP_BACKEND=triton against =torch."""
    expected = _train_step(arch, thresholds, 40, 3, "torch", "cpu")
    got = _train_step(arch, thresholds, 40, 3, "triton", device)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key.startswith("spikes"):
            assert torch.equal(got[key], value), key
            assert int(value.sum()) > 0, key
        else:
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=key)
            assert float(value.abs().max()) > 0, key


@pytest.mark.parametrize("device", DEVICES)
def test_registered_as_torch_operators(triton_backend, device: str) -> None:
    """The kernels are torch operators with fake implementations (what autograd and torch.compile see)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    for name in ("lif_scan", "lif_scan_lateral", "psp_coefficients", "output_rules"):
        assert hasattr(torch.ops.hm2bp, name), name
    with FakeTensorMode():
        drive = torch.empty(8, 5, device=device)
        consts = torch.empty(3, device=device)
        out = torch.ops.hm2bp.lif_scan(drive, consts, 2)
        assert out.shape == (8, 5)
        coef = torch.ops.hm2bp.psp_coefficients(drive.to(torch.uint8), torch.empty(5, dtype=torch.float64,
                                                                                   device=device), 2, 256)
        assert coef.shape == (8, 5) and coef.dtype == torch.float64
    if device == "cuda":  # the interpreter's kernels cannot be traced with fake tensors; compiled ones can
        drive, consts = torch.rand(16, 8, device=device), torch.tensor([64.0, 8.0, 0.5], device=device)

        def spikes_per_neuron(d: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return torch.ops.hm2bp.lif_scan(d, c, 2).sum(0)

        compiled = torch.compile(spikes_per_neuron, fullgraph=True)
        assert torch.equal(compiled(drive, consts), spikes_per_neuron(drive, consts))


@pytest.mark.golden
@pytest.mark.parametrize("device", DEVICES)
def test_golden_cnn_forward_spike_for_spike(golden_dir, device: str) -> None:  # type: ignore[no-untyped-def]
    """The authors' spiking CNN (28x28-5c5-p2-3c5-p2-100-10, T = 450) on the Triton backend reproduces their
    spikes in every layer (the golden test of tests/golden/test_cnn_golden.py, forward only, one variant)."""
    from hm2bp.io import authors
    from hm2bp.nn.network import build_network

    T = 450
    net = build_network("28x28-5c5-p2-3c5-p2-100-10", [5, 2, 5, 2, 10, 5])
    wdir = golden_dir / "test/golden/cnn_mnist/weights"
    weights = {0: authors.read_conv_weights(wdir / "conv1_info.txt", 5, 1, 5),
               2: authors.read_conv_weights(wdir / "conv2_info.txt", 3, 5, 5),
               5: authors.read_weight_list(wdir / "hidden_info.txt", 100, 48),
               6: authors.read_weight_list(wdir / "output_info.txt", 10, 100)}
    with torch.no_grad():
        for i, w in weights.items():
            net.layers[i].weight.copy_(torch.from_numpy(w))
    sp = golden_dir / "test/golden/cnn_mnist/spikes"
    gold = [authors.read_dense_spike_map(sp / "conv1/train/conv1_1.dat", 5, T, 24, 24),
            authors.read_dense_spike_map(sp / "pool1/train/pool1_1.dat", 5, T, 12, 12),
            authors.read_dense_spike_map(sp / "conv2/train/conv2_1.dat", 3, T, 8, 8),
            authors.read_dense_spike_map(sp / "pool2/train/pool2_1.dat", 3, T, 4, 4),
            authors.read_sparse_spikes(sp / "hidden/train/hidden.dat", 100, T),
            authors.read_sparse_spikes(sp / "output/train/output.dat", 10, T)]
    x = torch.from_numpy(authors.read_sparse_spikes(golden_dir / "test/cnn_mnist/input_spikes_0_5.dat", 784, T))
    before = os.environ.get("HM2BP_BACKEND")
    os.environ["HM2BP_BACKEND"] = "triton"
    try:
        with torch.no_grad():
            net.to(device)(x.float().reshape(T, 1, 1, 28, 28).to(device), record=True)
    finally:
        if before is None:
            os.environ.pop("HM2BP_BACKEND")
        else:
            os.environ["HM2BP_BACKEND"] = before
    for k, (g, ours) in enumerate(zip(gold, net.hidden_spikes)):
        got = ours[:, 0].cpu().numpy().astype(bool).reshape(g.shape)
        assert (got != g).sum() == 0, f"layer {k}: {(got != g).sum()} mismatching spikes"
    assert sum(int(g.sum()) for g in gold) > 20000
