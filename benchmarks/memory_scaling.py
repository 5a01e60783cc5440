"""How a training step's memory grows with the number of time steps T, per library.

Runs the harness's training child (one process per point, threads pinned) for 784-800-10 at batch 64 and
T ∈ {100, 200, 400, 800}, fits train_mem_mb = a + slope·T by least squares and reports the slope as bytes
per (sample × time step × spiking neuron) (810 neurons: 800 hidden + 10 output). hm2bp keeps one byte per
(sample × step × neuron) of output spikes plus four bytes per input spike for the backward pass; a BPTT
library keeps its float32 activations of every step.

    python benchmarks/memory_scaling.py                  # -> benchmarks/results/memory_scaling.csv
    python benchmarks/memory_scaling.py --only hm2bp --T 100 400
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402  (found through the sys.path entry above)

NEURONS = 810
LIBRARIES = {"hm2bp": ("hm2bp", ""), "snntorch": ("bptt", ""), "spikingjelly": ("bptt", "cubalif")}


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y against x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - slope * mx, slope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, nargs="+", default=[100, 200, 400, 800])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=list(LIBRARIES))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "memory_scaling.csv")
    args = ap.parse_args()
    rows = []
    for lib in args.only:
        rule, neuron = LIBRARIES[lib]
        points = []
        for T in args.T:
            extra = ["--child", "--phase", "train", "--library", lib, "--rule", rule, "--neuron", neuron,
                     "--T", str(T), "--batch", str(args.batch), "--n-hidden", "800", "--repeats", "2", "--budget", "60"]
            res = harness._run_child(lib, extra, args.threads, 600.0)
            if "error" in res:
                print(f"{lib} T={T}: {res['error']}", flush=True)
                continue
            mem = float(res["mem_mb"])
            points.append((T, mem))
            rows.append({"library": lib, "T": T, "batch": args.batch, "train_mem_mb": round(mem, 1),
                         "train_step_s": round(float(res["step_s"]), 4), "bytes_per_sample_step_neuron": "",
                         "threads": args.threads})
            print(f"{lib:13s} T={T:4d}  train memory {mem:8.1f} MB  step {float(res['step_s']):.3f} s", flush=True)
        if len(points) >= 2:
            intercept, slope = fit(points)
            per = slope * 2**20 / (args.batch * NEURONS)
            rows.append({"library": lib, "T": "fit", "batch": args.batch, "train_mem_mb": f"{intercept:.1f} + {slope:.4f}*T",
                         "train_step_s": "", "bytes_per_sample_step_neuron": round(per, 3), "threads": args.threads})
            print(f"{lib:13s} slope {slope:.4f} MB per step -> {per:.2f} bytes per (sample x step x neuron)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["library"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
