"""Spike raster of one sample through every layer of a spiking network (matplotlib PNG).

One digit image (``hm2bp.data.digits``) is Bernoulli-coded (docs/algorithm.md §1.5) and run through the network with
``record=True``, which keeps each layer's output spike train in ``net.hidden_spikes`` (time-major
``[T, B, N]`` or ``[T, B, C, H, W]``). Each panel shows one layer: a dot per (time step, neuron) spike.

    python examples/02_raster_plot.py --out /tmp/rasters                      # a fresh 64-200-10 network
    python examples/02_raster_plot.py --out /tmp/rasters --arch 8x8-4c3-p2-10 --thresholds 2,1,3
    python examples/02_raster_plot.py --out /tmp/rasters --checkpoint runs/digits/best.pt   # a trained one

Without ``--out`` the PNG goes to a new temporary folder. Prints the path of ``raster.png``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from hm2bp.data.digits import load_digits  # noqa: E402
from hm2bp.encoding import poisson_encode  # noqa: E402
from hm2bp.nn.layers import Flatten  # noqa: E402
from hm2bp.nn.network import SpikingNetwork, build_network  # noqa: E402


def load_network(args: argparse.Namespace) -> SpikingNetwork:
    if args.checkpoint:
        from hm2bp.train import model_from_checkpoint

        net, _, _ = model_from_checkpoint(args.checkpoint)
        return net
    thresholds = [float(v) for v in args.thresholds.split(",")]
    return build_network(args.arch, thresholds, generator=torch.Generator().manual_seed(args.seed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a new temporary folder)")
    ap.add_argument("--arch", default="64-200-10", help="architecture string with a 64 or 8x8 input")
    ap.add_argument("--thresholds", default="2,5", help="one threshold per conv/pool/FC layer")
    ap.add_argument("--checkpoint", default=None, help="plot a trained network (a run's best.pt/last.pt)")
    ap.add_argument("--T", type=int, default=150, help="time steps")
    ap.add_argument("--sample", type=int, default=0, help="index of the test image")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="hm2bp_raster_"))
    out.mkdir(parents=True, exist_ok=True)

    net = load_network(args).eval()
    images, labels = load_digits("test")
    image, label = images[args.sample : args.sample + 1], int(labels[args.sample])
    x = poisson_encode(image, args.T, torch.Generator().manual_seed(args.seed)).float()   # [T, 1, 64]
    with torch.no_grad():
        net(x, record=True)                                     # net.hidden_spikes: one train per layer
    trains = [x] + list(net.hidden_spikes)
    layers = [m for m in net.layers if not isinstance(m, Flatten)]
    names = ["input"] + [f"{i + 1}: {type(m).__name__}" for i, m in enumerate(layers)]
    names[-1] += " (output)"
    counts = net.hidden_spikes[-1][:, 0].sum(0)                 # output counts of the sample [10]
    pred = int(counts.argmax())                                 # docs/algorithm.md §1.3: arg-max, ties to the lowest

    fig, axes = plt.subplots(len(trains), 1, figsize=(9, 1.4 + 1.7 * len(trains)), sharex=True, squeeze=False)
    for ax, train, name in zip(axes[:, 0], trains, names):
        s = train[:, 0].reshape(train.shape[0], -1)             # [T, neurons] of sample 0 (maps flattened)
        t, i = torch.nonzero(s, as_tuple=True)
        ax.scatter(t.numpy(), i.numpy(), s=6, c="k", marker="|", linewidths=0.8)
        ax.set_xlim(-0.5, args.T - 0.5)
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
        ax.set_ylabel(f"{name}\n{s.shape[1]} neurons\n{int(s.sum())} spikes", fontsize=8)
    axes[-1, 0].set_xlabel("time step")
    axes[0, 0].set_title(f"{net.arch or 'network'}: test digit {args.sample}, label {label}, predicted {pred}")
    fig.tight_layout()
    path = out / "raster.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"output counts: {counts.int().tolist()}")
    print(path)


if __name__ == "__main__":
    main()
