"""The benchmark workload shared by every library, and the peer libraries' BPTT training steps.

This file imports nothing but torch (and, inside the builder functions, the peer library itself), so the
same file runs in the main environment (hm2bp) and in the peer virtual environments that
``setup_peer_envs.sh`` creates (which do not have hm2bp installed).

The workload (identical for every library, same torch release everywhere):
- input spikes ``[T, B, 784]`` float32, drawn from ``torch.Generator().manual_seed(seed)`` in the same order
  in every process: MNIST-like, ~19 % of the pixels "inked", each firing with a rate ≤ 0.18 per step,
  nothing at t = 0 (:func:`make_inputs`); labels ``[B]`` from the same generator;
- the network 784-800-10, bias-free fully connected layers, current-based LIF neurons with
  τ_m = 64, τ_s = 8, thresholds 20 (hidden) and 8 (output), reset to 0;
- the weights: U(−1, 1) drawn from ``manual_seed(0)``, first [800, 784] then [10, 800] — exactly the draws
  ``hm2bp.nn.network.build_network(..., generator=manual_seed(0))`` makes. hm2bp's neuron adds the
  synaptic state divided by τ_s to v (docs/algorithm.md §1.1: x ← (1−1/τ_s)·x + W·s, v ← (1−1/τ_m)·v + x/τ_s), a
  synaptic-current LIF adds the current itself (i ← α·i + W·s, v ← β·v + i), so the peers use W/τ_s:
  with α = 1 − 1/τ_s and β = 1 − 1/τ_m that is the same membrane trajectory (without hm2bp's refractory
  period of 2 steps, its one-step synaptic delay and its fixed output lateral inhibition, which the peers'
  stock neurons do not have);
- the loss: MSE on the output spike counts against 35 (label) / 5 (other classes), mean over the batch
  (hm2bp uses its own rate loss with the same targets and a dead zone of 5), Adam (lr 1e-3).

The CNN workload (``arch="cnn"``, the paper's 28x28-15c5-p2-40c5-p2-300-10, docs/algorithm.md §5): the same input spikes seen
as 28×28 images; thresholds 5, 2, 12, 4, 10, 10; valid 5×5 convolutions and spiking 2×2 sum pools (unit weights,
each a LIF layer of its own); the weights are the authors' trained checkpoint (``Result/checkPoint_cnn_best.txt``,
written by the harness to a torch file that every process loads) so that every layer is active as in training,
or, without the golden data, the U(−0.5, 0.5) conv / U(−1, 1) FC draws of ``build_network(..., manual_seed(0))``.
The peers again get W/τ_s (the pools 1/τ_s).

Peer models (surrogate-gradient BPTT; both layer by layer: one GEMM over all T·B rows, then the neuron scan
over time — the fastest way to write this feed-forward net in either library):
- snnTorch: ``snntorch.Synaptic(alpha=1−1/8, beta=1−1/64, threshold, reset_mechanism="zero")``, stepped
  over ``current.unbind(0)`` (default surrogate: arctan).
- SpikingJelly (``activation_based``): ``layer.Linear(step_mode="m")`` + ``neuron.CUBALIFNode(c_decay=1−1/8,
  v_decay=1−1/64, v_threshold, v_reset=0.0, surrogate=ATan())`` in multi-step mode, ``detach_reset=True``. CUBALIFNode's
  multi-step path is a Python loop that indexes ``x_seq[t]``; its backward then materialises a full
  ``[T, B, N]`` zero gradient per step (O(T²) work), so :class:`_UnbindCUBALIF` overrides only that loop to
  split time with ``unbind(0)`` (one ``stack`` in the backward), calling the library's own single-step
  update. ``neuron="lif"`` selects instead ``neuron.LIFNode(tau=64, decay_input=False)``, no synaptic
  current, on SpikingJelly's fused CPU LIF operator: the fastest neuron the library has, but not the same
  model.

Both peers detach the reset from the graph (SpikingJelly: ``detach_reset=True``, set by :func:`_sj_neurons`;
snnTorch's ``Synaptic`` always does, its reset signal is ``spike_grad(mem − θ).detach()``), as hm2bp's own
BPTT rule does (docs/algorithm.md §8.6). SpikingJelly's default ``detach_reset=False`` differentiates the hard
reset v ← (1 − s)·v through the surrogate: ∂v'/∂v = 1 − s − v·σ'(v − θ), about −θ (−19 at θ = 20) near the
threshold, compounded over the T steps of the scan. With these thresholds the largest first-layer gradient
is 1.5e20 in the first batch (792 with the reset detached, same loss), Adam's steps follow that exploded
noise, its second moment overflows to inf within 15 batches, and the output counts never move towards the
targets: the earlier SpikingJelly protocol rows (one class, 9.55 % / 11.25 %) came from this.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

N_IN, N_HIDDEN, N_OUT = 784, 800, 10
THRESHOLDS = (20.0, 8.0)
TAU_M, TAU_S = 64.0, 8.0
ALPHA = 1.0 - 1.0 / TAU_S  # synaptic-current decay per step (hm2bp: x ← x − x/τ_s)
BETA = 1.0 - 1.0 / TAU_M   # membrane decay per step (hm2bp: v ← v − v/τ_m)
DESIRED, UNDESIRED = 35.0, 5.0
LR = 1e-3
INPUT_SEED, WEIGHT_SEED = 1, 0


def make_inputs(T: int, batch: int, seed: int = INPUT_SEED, n_in: int = N_IN) -> tuple[Tensor, Tensor]:
    """Bernoulli MNIST-like input spikes ``[T, B, n_in]`` (float32 0/1) and labels ``[B]`` (int64).

    ~19 % of the pixels are inked, each with a rate uniform in [0, 0.18) per step; no spike at t = 0. The
    same (T, batch, seed) gives the same tensors in every process with the same torch release.
    """
    gen = torch.Generator().manual_seed(seed)
    rates = (torch.rand(batch, n_in, generator=gen) < 0.19).float() * torch.rand(batch, n_in, generator=gen) * 0.18
    x = (torch.rand(T, batch, n_in, generator=gen) < rates).float()
    x[0] = 0
    labels = torch.randint(0, N_OUT, (batch,), generator=gen)
    return x, labels


def make_weights(n_hidden: int = N_HIDDEN, seed: int = WEIGHT_SEED) -> tuple[Tensor, Tensor]:
    """U(−1, 1) weights [n_hidden, 784] and [10, n_hidden], the draws of hm2bp's build_network."""
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.empty(n_hidden, N_IN).uniform_(-1.0, 1.0, generator=gen)
    w2 = torch.empty(N_OUT, n_hidden).uniform_(-1.0, 1.0, generator=gen)
    return w1, w2


CNN_ARCH = "28x28-15c5-p2-40c5-p2-300-10"
CNN_THRESHOLDS = (5.0, 2.0, 12.0, 4.0, 10.0, 10.0)
CNN_SHAPES = ((15, 1, 5, 5), (40, 15, 5, 5), (300, 640), (10, 300))
CNN_FANOUT = (15 * 25, 1, 40 * 25, 1, 300, 10)
"""Synapses per spike of the input and of each layer's output (conv: K·k², pool: 1, FC: N_out)."""


def make_cnn_weights(path: str | None = None, seed: int = WEIGHT_SEED) -> list[Tensor]:
    """conv1, conv2, hidden, output weights of the CNN: from ``path`` (a list of tensors saved by the harness),
    else the draws of hm2bp's build_network (conv U(−0.5, 0.5), FC U(−1, 1), in layer order)."""
    if path:
        return [w.float() for w in torch.load(path)]
    gen = torch.Generator().manual_seed(seed)
    return [torch.empty(shape).uniform_(-(0.5 if len(shape) == 4 else 1.0), 0.5 if len(shape) == 4 else 1.0,
                                        generator=gen) for shape in CNN_SHAPES]


def target_counts(labels: Tensor) -> Tensor:
    return UNDESIRED + (DESIRED - UNDESIRED) * torch.nn.functional.one_hot(labels, N_OUT).float()


def count_loss(counts: Tensor, labels: Tensor) -> Tensor:
    """MSE on output spike counts (sum over classes, mean over the batch)."""
    return 0.5 * (counts - target_counts(labels)).square().sum(1).mean()


def _linear(w: Tensor, linear_cls: type = nn.Linear, **kw: object) -> nn.Module:
    lin = linear_cls(w.shape[1], w.shape[0], bias=False, **kw)
    with torch.no_grad():
        lin.weight.copy_(w / TAU_S)
    return lin


# --------------------------------------------------------------------------------------------- snnTorch
class SnnTorchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        import snntorch as snn

        w1, w2 = make_weights()
        self.fc1, self.fc2 = _linear(w1), _linear(w2)
        self.lif1 = snn.Synaptic(alpha=ALPHA, beta=BETA, threshold=THRESHOLDS[0], reset_mechanism="zero")
        self.lif2 = snn.Synaptic(alpha=ALPHA, beta=BETA, threshold=THRESHOLDS[1], reset_mechanism="zero")

    @staticmethod
    def _scan(lif: nn.Module, current: Tensor) -> Tensor:
        syn, mem = lif.reset_mem()  # type: ignore[attr-defined]
        spikes = []
        for cur in current.unbind(0):
            spk, syn, mem = lif(cur, syn, mem)
            spikes.append(spk)
        return torch.stack(spikes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x ``[T, B, 784]`` → (hidden spikes ``[T, B, 800]``, output spikes ``[T, B, 10]``)."""
        hidden = self._scan(self.lif1, self.fc1(x))
        return hidden, self._scan(self.lif2, self.fc2(hidden))


# ------------------------------------------------------------------------------------------ SpikingJelly
def _sj_neurons(make: Callable[[float], nn.Module], thresholds: tuple[float, ...]) -> list[nn.Module]:
    """One SpikingJelly neuron ``make(th)`` per threshold, in multi-step mode, with the reset detached from
    the graph like snnTorch's (the module docstring says why: without it the gradients explode)."""
    neurons = [make(th) for th in thresholds]
    for m in neurons:
        m.step_mode = "m"
        m.detach_reset = True
    return neurons


def _unbind_cubalif_class() -> type:
    from spikingjelly.activation_based import neuron

    class _UnbindCUBALIF(neuron.CUBALIFNode):
        """CUBALIFNode whose multi-step loop splits time with ``unbind`` instead of ``x_seq[t]``."""

        def multi_step_functional_forward(self, inputs, states, **kwargs):  # type: ignore[no-untyped-def]
            steps = [x.unbind(0) for x in inputs]
            outputs = []
            for xs in zip(*steps):
                out, states = self.single_step_functional_forward(tuple(xs), states, **kwargs)
                outputs.append(out)
            return tuple(torch.stack(seq) for seq in zip(*outputs)), states

    return _UnbindCUBALIF


class SpikingJellyNet(nn.Module):
    def __init__(self, neuron_kind: str = "cubalif") -> None:
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        w1, w2 = make_weights()
        self.fc1 = _linear(w1, layer.Linear, step_mode="m")
        self.fc2 = _linear(w2, layer.Linear, step_mode="m")
        if neuron_kind in ("cubalif", "cubalif-index"):  # cubalif-index: the library's own x_seq[t] loop
            cls = _unbind_cubalif_class() if neuron_kind == "cubalif" else neuron.CUBALIFNode
            self.lif1, self.lif2 = _sj_neurons(lambda th: cls(c_decay=ALPHA, v_decay=BETA, v_threshold=th, v_reset=0.0,
                                                              surrogate_function=surrogate.ATan()), THRESHOLDS)
        elif neuron_kind == "lif":
            # v ← v − v/τ + x: the membrane leak of hm2bp without its synaptic current. The input then has
            # to carry the synaptic gain: scale the weights by the steady-state gain 1/(1 − α) = τ_s.
            with torch.no_grad():
                self.fc1.weight.mul_(TAU_S)
                self.fc2.weight.mul_(TAU_S)
            self.lif1, self.lif2 = _sj_neurons(lambda th: neuron.LIFNode(
                tau=TAU_M, decay_input=False, v_threshold=th, v_reset=0.0, surrogate_function=surrogate.ATan()),
                THRESHOLDS)
        else:
            raise ValueError(f"unknown SpikingJelly neuron {neuron_kind!r} (cubalif | cubalif-index | lif)")
        self.neuron_kind = neuron_kind

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        hidden = self.lif1(self.fc1(x))
        return hidden, self.lif2(self.fc2(hidden))


# ------------------------------------------------------------------------------------------------ CNN
class _CNNBody(nn.Module):
    """The CNN's synaptic layers with the peers' W/τ_s; ``neuron(i, current)`` scans layer i's LIF neurons
    over time (``current`` ``[T, B, ...]``). Convolutions and pools run over all T·B images at once."""

    def __init__(self, weights_path: str | None) -> None:
        super().__init__()
        w = make_cnn_weights(weights_path)
        self.conv1, self.conv2 = (nn.Conv2d(k.shape[1], k.shape[0], k.shape[2], bias=False) for k in w[:2])
        self.fc1, self.fc2 = _linear(w[2]), _linear(w[3])
        with torch.no_grad():
            self.conv1.weight.copy_(w[0] / TAU_S)
            self.conv2.weight.copy_(w[1] / TAU_S)

    @staticmethod
    def _images(op: nn.Module | object, x: Tensor) -> Tensor:
        T, B = x.shape[:2]
        y = op(x.reshape(T * B, *x.shape[2:]))  # type: ignore[operator]
        return y.reshape(T, B, *y.shape[1:])

    def run(self, x: Tensor, neuron) -> tuple[list[Tensor], Tensor]:  # type: ignore[no-untyped-def]
        """x ``[T, B, 784]`` → (every layer's spikes, output spikes)."""
        def pool(s: Tensor) -> Tensor:  # the 2×2 sum of spikes, times the peers' 1/τ_s
            return torch.nn.functional.avg_pool2d(s, 2, ceil_mode=True) * (4.0 / TAU_S)

        T, B = x.shape[:2]
        s = [neuron(0, self._images(self.conv1, x.reshape(T, B, 1, 28, 28)))]
        s.append(neuron(1, self._images(pool, s[-1])))
        s.append(neuron(2, self._images(self.conv2, s[-1])))
        s.append(neuron(3, self._images(pool, s[-1])))
        s.append(neuron(4, self.fc1(s[-1].reshape(T, B, -1))))
        s.append(neuron(5, self.fc2(s[-1])))
        return s, s[-1]


class SnnTorchCNN(nn.Module):
    def __init__(self, weights_path: str | None) -> None:
        super().__init__()
        import snntorch as snn

        self.body = _CNNBody(weights_path)
        self.lifs = nn.ModuleList(snn.Synaptic(alpha=ALPHA, beta=BETA, threshold=th, reset_mechanism="zero")
                                  for th in CNN_THRESHOLDS)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        return self.body.run(x, lambda i, cur: SnnTorchNet._scan(self.lifs[i], cur))


class SpikingJellyCNN(nn.Module):
    def __init__(self, weights_path: str | None) -> None:
        super().__init__()
        from spikingjelly.activation_based import surrogate

        self.body = _CNNBody(weights_path)
        cls = _unbind_cubalif_class()
        self.lifs = nn.ModuleList(_sj_neurons(lambda th: cls(c_decay=ALPHA, v_decay=BETA, v_threshold=th, v_reset=0.0,
                                                             surrogate_function=surrogate.ATan()), CNN_THRESHOLDS))

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        return self.body.run(x, lambda i, cur: self.lifs[i](cur))


def build_peer(library: str, neuron_kind: str = "", arch: str = "fc", weights_path: str | None = None) -> nn.Module:
    if arch == "cnn":
        if library == "snntorch":
            return SnnTorchCNN(weights_path)
        if library == "spikingjelly":
            return SpikingJellyCNN(weights_path)
    elif library == "snntorch":
        return SnnTorchNet()
    elif library == "spikingjelly":
        return SpikingJellyNet(neuron_kind or "cubalif")
    raise ValueError(f"unknown peer library {library!r}")


def neuron_description(library: str, neuron_kind: str = "") -> str:
    if library == "snntorch":
        return f"snntorch.Synaptic(alpha={ALPHA:g},beta={BETA:g},reset=zero,atan)"
    if (neuron_kind or "cubalif") == "cubalif":
        return f"CUBALIFNode(c_decay={ALPHA:g},v_decay={BETA:g},v_reset=0,detach_reset,atan;unbind loop)"
    if neuron_kind == "cubalif-index":
        return f"CUBALIFNode(c_decay={ALPHA:g},v_decay={BETA:g},v_reset=0,detach_reset,atan;library x_seq[t] loop)"
    return f"LIFNode(tau={TAU_M:g},decay_input=False,v_reset=0,detach_reset,atan;fused CPU op;no synaptic current)"


def library_version(library: str) -> str:
    if library == "snntorch":
        import snntorch

        return str(snntorch.__version__)
    from importlib.metadata import version

    return version("spikingjelly")


def peer_train_step(net: nn.Module, opt: torch.optim.Optimizer, x: Tensor, labels: Tensor) -> tuple[float, float, float]:
    """One BPTT step; returns (forward, backward, optimizer update) seconds."""
    import time

    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    _, out = net(x)
    loss = count_loss(out.sum(0), labels)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def peer_infer(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        return net(x)


def dense_flops_per_sample(T: int, n_hidden: int = N_HIDDEN, arch: str = "fc") -> float:
    """Multiply-adds ×2 of the dense layer products (FC products, or the CNN's two convolutions and two FC
    products) over T steps for one sample (forward only)."""
    if arch == "cnn":
        return 2.0 * T * (15 * 24 * 24 * 25 + 40 * 8 * 8 * 15 * 25 + 640 * 300 + 300 * 10)
    return 2.0 * T * (N_IN * n_hidden + n_hidden * N_OUT)


__all__ = ["build_peer", "count_loss", "dense_flops_per_sample", "make_cnn_weights", "make_inputs", "make_weights"]
