"""One HM2-BP training step of MNIST 784-800-10 at T = 400: samples/s of the fast path (compiled
kernels, and pure torch) against the float64 loop reference, each configuration in its own process
with pinned threads, all in one run.

    python benchmarks/bench_train_step.py            # writes benchmarks/results/train_step.csv
    python benchmarks/bench_train_step.py --quick    # smaller, for a smoke run

Each row: path, batch, threads, median seconds per step, samples/s. Ratios between rows of the same run
are the meaningful figures (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _inputs(T: int, batch: int, n_in: int, seed: int):  # type: ignore[no-untyped-def]
    import torch

    gen = torch.Generator().manual_seed(seed)
    # MNIST-like input: 784 pixels, ~19 % of them inked, each firing with p ≤ 0.18 per step.
    rates = (torch.rand(batch, n_in, generator=gen) < 0.19).float() * torch.rand(batch, n_in, generator=gen) * 0.18
    x = (torch.rand(T, batch, n_in, generator=gen) < rates).float()
    x[0] = 0
    labels = torch.randint(0, 10, (batch,), generator=gen)
    return x, labels


def run_fast(T: int, batch: int, repeats: int) -> list[float]:
    import torch

    from hm2bp.loss import rate_loss, weight_regularizer
    from hm2bp.nn.network import build_network

    net = build_network("784-800-10", [20.0, 8.0], generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, labels = _inputs(T, batch, 784, 1)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        opt.zero_grad()
        counts = net(x, labels).sum(0)
        (rate_loss(counts, labels) + weight_regularizer(net, 10.0, 0.04)).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return times[1:]  # the first step includes one-time set-up (kernel loading)


def run_reference(T: int, batch: int, repeats: int) -> list[float]:
    import numpy as np
    import torch

    from hm2bp.reference import hm2bp_ref as ref

    gen = torch.Generator().manual_seed(0)
    w_h = torch.empty(800, 784).uniform_(-1, 1, generator=gen).numpy()
    w_o = torch.empty(10, 800).uniform_(-1, 1, generator=gen).numpy()
    lateral = -(1.0 - np.eye(10, dtype=np.float32))
    x, labels = _inputs(T, batch, 784, 1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in range(batch):
            xb = x[:, b].numpy()
            hidden = ref.fc_forward_ref(xb, w_h, 20.0, 1e-6)
            out = ref.fc_forward_ref(hidden, w_o, 8.0, 1e-6, lateral=lateral)
            _, d_below = ref.output_backward_ref(out, hidden, w_o, 8.0, int(labels[b]), lateral=True)
            ref.fc_backward_ref(d_below, xb, hidden, w_h, 20.0)
        times.append(time.perf_counter() - start)
    return times


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    fn = run_reference if args.path == "reference" else run_fast
    times = fn(args.T, args.batch, args.repeats)
    step = statistics.median(times)
    print(json.dumps({"path": args.path, "T": args.T, "batch": args.batch, "threads": args.threads,
                      "backend": os.environ.get("HM2BP_BACKEND", "compiled"), "seconds_per_step": step,
                      "samples_per_s": args.batch / step, "repeats": len(times)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", default="fast")
    ap.add_argument("--T", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/train_step.csv")
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    T = 100 if args.quick else args.T
    configs = [
        # (path, batch, threads, repeats, extra env)
        ("fast", 1, args.threads, 20, {}),
        ("fast", 64, args.threads, args.repeats, {}),
        ("fast", 64, 1, args.repeats, {}),
        ("fast-torch", 1, args.threads, 5, {"HM2BP_BACKEND": "torch"}),
        ("fast-torch", 64, args.threads, 3, {"HM2BP_BACKEND": "torch"}),
        ("reference", 1, 1, 1, {}),
    ]
    rows = []
    for path, batch, threads, repeats, env in configs:
        cmd = [sys.executable, __file__, "--child", "--path", "reference" if path == "reference" else "fast",
               "--T", str(T), "--batch", str(batch), "--threads", str(threads), "--repeats", str(repeats)]
        child_env = {**os.environ, "OMP_NUM_THREADS": str(threads), **env}
        done = subprocess.run(cmd, env=child_env, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["path"] = path
        rows.append(row)
        print(f"{path:11s} batch {batch:3d} threads {threads}: {row['samples_per_s']:9.2f} samples/s "
              f"({row['seconds_per_step']:.3f} s/step)", flush=True)
    import torch

    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0].keys(), *meta.keys()])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **meta})
    tmp.replace(args.out)
    ref_rate = rows[-1]["samples_per_s"]
    for row in rows[:-1]:
        print(f"{row['path']} batch {row['batch']} threads {row['threads']}: {row['samples_per_s'] / ref_rate:,.0f}x the reference")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
