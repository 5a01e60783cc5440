"""Export a spiking network to NIR, read it back, and check that both give the same spikes.

NIR (the Neuromorphic Intermediate Representation, https://neuroir.org) lets a network trained with
HM2-BP run on other simulators and hardware. ``hm2bp.nir_io`` maps every layer to NIR nodes
(``Linear``/``Conv2d``/``SumPool2d`` + ``CubaLIF``, a recurrent ``Linear`` for the output lateral inhibition)
and stores what NIR cannot express (one-step delay, refractory clamp, exact constants) as ``hm2bp.*``
metadata; see docs/nir.md. Needs ``pip install hm2bp[nir]``.

    python examples/03_export_nir.py --out /tmp/nir_example                   # a small conv net
    python examples/03_export_nir.py --out /tmp/nir_example --arch 64-200-10 --thresholds 2,5
    python examples/03_export_nir.py --out /tmp/nir_example --checkpoint runs/digits/best.pt

Writes ``<out>/network.nir`` (HDF5) and prints the graph's nodes and the spike comparison; exits with
status 1 if any layer's spikes differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hm2bp.encoding import poisson_encode
from hm2bp.nn.network import SpikingNetwork, build_network


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for network.nir")
    ap.add_argument("--arch", default="8x8-4c3-p2-10", help="architecture string")
    ap.add_argument("--thresholds", default="2,1,3", help="one threshold per conv/pool/FC layer")
    ap.add_argument("--checkpoint", default=None, help="export a trained network (a run's best.pt/last.pt)")
    ap.add_argument("--T", type=int, default=100, help="time steps of the comparison")
    ap.add_argument("--batch", type=int, default=8, help="random inputs in the comparison")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import nir
    except ImportError:
        print("this example needs the NIR package: pip install hm2bp[nir]", file=sys.stderr)
        return 1
    from hm2bp.nir_io import export_nir, load_nir, save_nir

    if args.checkpoint:
        from hm2bp.train import model_from_checkpoint

        net, _, _ = model_from_checkpoint(args.checkpoint)
    else:
        thresholds = [float(v) for v in args.thresholds.split(",")]
        net = build_network(args.arch, thresholds, generator=torch.Generator().manual_seed(args.seed))
    net.eval()
    args.out.mkdir(parents=True, exist_ok=True)

    graph = export_nir(net, dt=1e-3)                 # a nir.NIRGraph: one step = 1 ms
    print(f"NIR graph of {net.arch}: {len(graph.nodes)} nodes, {len(graph.edges)} edges")
    for name, node in graph.nodes.items():
        print(f"  {name:10s} {type(node).__name__}")
    path = args.out / "network.nir"
    save_nir(net, path)                              # nir.write (HDF5)
    net2: SpikingNetwork = load_nir(path)            # nir.read + import_nir
    print(f"wrote {path} ({path.stat().st_size} bytes, nir {nir.__version__}); re-imported: {net2.arch}")

    # the same random input spike trains through both networks, every layer recorded
    g = torch.Generator().manual_seed(args.seed + 1)
    n_in = int(torch.tensor(net.input_shape).prod())
    images = torch.randint(0, 256, (args.batch, n_in), generator=g, dtype=torch.uint8)
    x = poisson_encode(images, args.T, g).float()                     # [T, B, n_in]
    with torch.no_grad():
        net(x, record=True)
        net2(x, record=True)
    ok = True
    for k, (a, b) in enumerate(zip(net.hidden_spikes, net2.hidden_spikes)):
        same = torch.equal(a, b)
        ok &= same
        print(f"  layer {k + 1}: {int(a.sum())} spikes, {'identical' if same else 'DIFFERENT'}")
    print("spikes identical after the NIR round trip" if ok else "spikes differ after the NIR round trip")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
