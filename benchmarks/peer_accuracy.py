"""Train a peer library's BPTT network (``peers.py``) on given input spikes and report its test accuracy.

Runs inside a peer virtual environment (``setup_peer_envs.sh``: torch + numpy + the library, no hm2bp), as
a child of ``accuracy.py``, which writes the rasters hm2bp trains on to an ``.npz`` (bit-packed
``[N, T, 784]`` spikes and labels of the training and test images), so every library sees the same spikes.

    benchmarks/.envs/snntorch/bin/python benchmarks/peer_accuracy.py --library snntorch --data rasters.npz \
        --batch 128 --epochs 1 --lr 1e-3 --threads 1

Prints one line ``RESULT {json}`` with ``test_acc`` (fraction), ``train_s`` (training wall time, the test
pass excluded) and ``library_version``. The model, loss and optimizer are the harness's (``peers.py``):
784-800-10 synaptic-current LIF, count MSE against 35 / 5, Adam, weights U(−1, 1)/τ_s, same draws as
hm2bp's initial weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers


def _unpack(packed: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """Bit-packed spikes of some samples → float32 ``[T, B, N]``."""
    n_bits = int(np.prod(shape[1:]))
    bits = np.unpackbits(packed, axis=1, count=n_bits).reshape(len(packed), *shape[1:])
    return torch.from_numpy(bits.astype(np.float32)).permute(1, 0, 2).contiguous()


def _counts(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    _, out = peers.peer_infer(net, x)
    return out.sum(0)


def run(a: argparse.Namespace) -> dict[str, object]:
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    d = np.load(a.data)
    shape_tr, shape_te = tuple(int(v) for v in d["train_shape"]), tuple(int(v) for v in d["test_shape"])
    y_tr, y_te = torch.from_numpy(d["train_labels"]).long(), torch.from_numpy(d["test_labels"]).long()
    net = peers.build_peer(a.library)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    order_gen = torch.Generator().manual_seed(a.seed)
    t_train = 0.0
    for epoch in range(a.epochs):
        order = torch.arange(len(y_tr)) if epoch == 0 and not a.shuffle_first else torch.randperm(
            len(y_tr), generator=order_gen)
        for i in range(0, len(order), a.batch):
            idx = order[i : i + a.batch].numpy()
            x = _unpack(d["train_spikes"][idx], (len(idx), *shape_tr[1:]))
            t0 = time.perf_counter()
            peers.peer_train_step(net, opt, x, y_tr[idx])
            t_train += time.perf_counter() - t0
    correct = 0
    for i in range(0, len(y_te), 256):
        x = _unpack(d["test_spikes"][i : i + 256], (min(256, len(y_te) - i), *shape_te[1:]))
        correct += int((_counts(net, x).argmax(1) == y_te[i : i + 256]).sum())
    return {"test_acc": correct / len(y_te), "train_s": t_train, "library_version": peers.library_version(a.library),
            "n_train": len(y_tr), "n_test": len(y_te)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--library", required=True, choices=("snntorch", "spikingjelly"))
    p.add_argument("--data", required=True, help=".npz written by accuracy.py")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=peers.LR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shuffle-first", action="store_true", help="shuffle before the first epoch too")
    print("RESULT " + json.dumps(run(p.parse_args(argv))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
