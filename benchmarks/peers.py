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
  synaptic state divided by τ_s to v (spec §1.1: x ← (1−1/τ_s)·x + W·s, v ← (1−1/τ_m)·v + x/τ_s), a
  synaptic-current LIF adds the current itself (i ← α·i + W·s, v ← β·v + i), so the peers use W/τ_s:
  with α = 1 − 1/τ_s and β = 1 − 1/τ_m that is the same membrane trajectory (without hm2bp's refractory
  period of 2 steps, its one-step synaptic delay and its fixed output lateral inhibition, which the peers'
  stock neurons do not have);
- the loss: MSE on the output spike counts against 35 (label) / 5 (other classes), mean over the batch
  (hm2bp uses its own rate loss with the same targets and a dead zone of 5), Adam (lr 1e-3).

Peer models (surrogate-gradient BPTT; both layer by layer: one GEMM over all T·B rows, then the neuron scan
over time — the fastest way to write this feed-forward net in either library):
- snnTorch: ``snntorch.Synaptic(alpha=1−1/8, beta=1−1/64, threshold, reset_mechanism="zero")``, stepped
  over ``current.unbind(0)`` (default surrogate: arctan).
- SpikingJelly (``activation_based``): ``layer.Linear(step_mode="m")`` + ``neuron.CUBALIFNode(c_decay=1−1/8,
  v_decay=1−1/64, v_threshold, v_reset=0.0, surrogate=ATan())`` in multi-step mode. CUBALIFNode's
  multi-step path is a Python loop that indexes ``x_seq[t]``; its backward then materialises a full
  ``[T, B, N]`` zero gradient per step (O(T²) work), so :class:`_UnbindCUBALIF` overrides only that loop to
  split time with ``unbind(0)`` (one ``stack`` in the backward), calling the library's own single-step
  update. ``neuron="lif"`` selects instead ``neuron.LIFNode(tau=64, decay_input=False)``, no synaptic
  current, on SpikingJelly's fused CPU LIF operator: the fastest neuron the library has, but not the same
  model.
"""

from __future__ import annotations

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
        if neuron_kind == "cubalif":
            cls = _unbind_cubalif_class()
            self.lif1, self.lif2 = (cls(c_decay=ALPHA, v_decay=BETA, v_threshold=th, v_reset=0.0,
                                        surrogate_function=surrogate.ATan()) for th in THRESHOLDS)
            for m in (self.lif1, self.lif2):
                m.step_mode = "m"
        elif neuron_kind == "cubalif-index":  # the library's own loop (x_seq[t]), for comparison only
            self.lif1, self.lif2 = (neuron.CUBALIFNode(c_decay=ALPHA, v_decay=BETA, v_threshold=th, v_reset=0.0,
                                                       surrogate_function=surrogate.ATan()) for th in THRESHOLDS)
            for m in (self.lif1, self.lif2):
                m.step_mode = "m"
        elif neuron_kind == "lif":
            # v ← v − v/τ + x: the membrane leak of hm2bp without its synaptic current. The input then has
            # to carry the synaptic gain: scale the weights by the steady-state gain 1/(1 − α) = τ_s.
            with torch.no_grad():
                self.fc1.weight.mul_(TAU_S)
                self.fc2.weight.mul_(TAU_S)
            self.lif1, self.lif2 = (neuron.LIFNode(tau=TAU_M, decay_input=False, v_threshold=th, v_reset=0.0,
                                                   surrogate_function=surrogate.ATan(), step_mode="m")
                                    for th in THRESHOLDS)
        else:
            raise ValueError(f"unknown SpikingJelly neuron {neuron_kind!r} (cubalif | cubalif-index | lif)")
        self.neuron_kind = neuron_kind

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        hidden = self.lif1(self.fc1(x))
        return hidden, self.lif2(self.fc2(hidden))


def build_peer(library: str, neuron_kind: str = "") -> nn.Module:
    if library == "snntorch":
        return SnnTorchNet()
    if library == "spikingjelly":
        return SpikingJellyNet(neuron_kind or "cubalif")
    raise ValueError(f"unknown peer library {library!r}")


def neuron_description(library: str, neuron_kind: str = "") -> str:
    if library == "snntorch":
        return f"snntorch.Synaptic(alpha={ALPHA:g},beta={BETA:g},reset=zero,atan)"
    if (neuron_kind or "cubalif") == "cubalif":
        return f"CUBALIFNode(c_decay={ALPHA:g},v_decay={BETA:g},v_reset=0,atan;unbind loop)"
    if neuron_kind == "cubalif-index":
        return f"CUBALIFNode(c_decay={ALPHA:g},v_decay={BETA:g},v_reset=0,atan;library x_seq[t] loop)"
    return f"LIFNode(tau={TAU_M:g},decay_input=False,v_reset=0,atan;fused CPU op;no synaptic current)"


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


def dense_flops_per_sample(T: int, n_hidden: int = N_HIDDEN) -> float:
    """Multiply-adds ×2 of the two dense layer products over T steps for one sample (forward only)."""
    return 2.0 * T * (N_IN * n_hidden + n_hidden * N_OUT)


__all__ = ["build_peer", "count_loss", "dense_flops_per_sample", "make_inputs", "make_weights"]
