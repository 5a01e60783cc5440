"""HM2-BP against surrogate-gradient BPTT on the same network and neuron (MNIST 784-800-10): test
accuracy against wall-clock training time. One process per rule, one after the other, threads pinned.

Both rules see the same images in the same order with fresh Bernoulli rasters each epoch (same seeds), the
same initial weights, thresholds [20, 8], Adam (lr 1e-3) on the rate loss. Every ``--eval-every`` training
samples the test accuracy on ``--n-test`` images (fixed rasters) is taken; the clock counts training only.

    python benchmarks/rule_comparison.py --mnist ../shared/data/mnist --n-train 10000 --n-test 2000 \
        --T 400 --batch 32 --epochs 2 --eval-every 2500 --threads 2 --max-train-s 900
writes benchmarks/results/rule_comparison.csv and docs/rule_comparison.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    import torch

    from hm2bp.data.idx import load_mnist
    from hm2bp.encoding import poisson_encode
    from hm2bp.loss import rate_loss
    from hm2bp.nn.network import build_network

    torch.set_num_threads(args.threads)
    images, labels = load_mnist(args.mnist, "train")
    test_images, test_labels = load_mnist(args.mnist, "test")
    images, labels = images[: args.n_train], torch.as_tensor(labels[: args.n_train]).long()
    test_images, y_test = test_images[: args.n_test], torch.as_tensor(test_labels[: args.n_test]).long()
    net = build_network("784-800-10", [20.0, 8.0], rule=args.rule, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    order_gen, code_gen = torch.Generator().manual_seed(2), torch.Generator().manual_seed(3)

    def test_accuracy() -> float:
        gen = torch.Generator().manual_seed(4)  # the same test rasters at every evaluation
        correct = 0
        with torch.no_grad():
            for i in range(0, args.n_test, 100):
                x = poisson_encode(test_images[i: i + 100], args.T, gen).float()
                correct += int((net(x).sum(0).argmax(1) == y_test[i: i + 100]).sum())
        return correct / args.n_test

    elapsed, seen, next_eval = 0.0, 0, args.eval_every
    for epoch in range(args.epochs):
        order = torch.randperm(args.n_train, generator=order_gen)
        for i in range(0, args.n_train, args.batch):
            idx = order[i: i + args.batch]
            x = poisson_encode(images[idx.numpy()], args.T, code_gen).float()
            start = time.perf_counter()
            opt.zero_grad()
            counts = net(x, labels[idx]).sum(0)
            rate_loss(counts, labels[idx]).backward()
            opt.step()
            elapsed += time.perf_counter() - start
            seen += len(idx)
            done = elapsed >= args.max_train_s
            if seen >= next_eval or done or (epoch == args.epochs - 1 and i + args.batch >= args.n_train):
                next_eval += args.eval_every
                print(json.dumps({"rule": args.rule, "epoch": epoch + 1, "samples": seen, "train_wall_s": elapsed,
                                  "test_accuracy": test_accuracy()}), flush=True)
            if done:
                return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rule", default="hm2bp")
    ap.add_argument("--mnist", type=Path, default=ROOT.parent / "shared/data/mnist")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=1000, help="training samples between test evaluations")
    ap.add_argument("--max-train-s", type=float, default=float("inf"), help="stop a rule after this much training time")
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    rows = []
    for rule in ("hm2bp", "bptt"):
        cmd = [sys.executable, __file__, "--child", "--rule", rule, "--mnist", str(args.mnist),
               "--n-train", str(args.n_train), "--n-test", str(args.n_test), "--T", str(args.T),
               "--batch", str(args.batch), "--epochs", str(args.epochs), "--lr", str(args.lr),
               "--threads", str(args.threads), "--eval-every", str(args.eval_every),
               "--max-train-s", str(args.max_train_s)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        for line in done.stdout.splitlines():
            row = json.loads(line)
            rows.append(row)
            print(f"{row['rule']:6s} epoch {row['epoch']}, {row['samples']:6d} samples: {row['train_wall_s']:7.1f} s, "
                  f"test accuracy {100 * row['test_accuracy']:.2f}%", flush=True)
    out = ROOT / "benchmarks/results/rule_comparison.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0].keys(), "T", "batch", "n_train", "n_test", "threads"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "T": args.T, "batch": args.batch, "n_train": args.n_train,
                             "n_test": args.n_test, "threads": args.threads})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for rule in ("hm2bp", "bptt"):
            pts = [r for r in rows if r["rule"] == rule]
            label = {"hm2bp": "HM2-BP", "bptt": "surrogate BPTT (same neuron)"}[rule]
            ax.plot([p["train_wall_s"] for p in pts], [100 * p["test_accuracy"] for p in pts], "o-", label=label)
        ax.set_xlabel("training wall-clock time (s)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"MNIST 784-800-10, T={args.T}, batch {args.batch}, {args.threads} threads", fontsize=9)
        ax.legend()
        fig.tight_layout()
        fig.savefig(ROOT / "docs/rule_comparison.png", dpi=120)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
