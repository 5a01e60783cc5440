"""Batch-1 training step against a forward pass, with the caches warm and cold (hm2bp alone).

Back-to-back inference passes find the weights (2.5 MB for 784-800-10) in the caches; a training step
finds them evicted, since its optimizer update streams the weights, gradients and both Adam moments of
every parameter. This measures, in one process and alternating: the inference pass back to back, the
inference pass after sweeping a buffer larger than the caches (outside the timed call), and the training
step (forward, rate loss, HM2-BP backward, fused Adam) back to back.

    python benchmarks/cache_effect.py            # -> benchmarks/results/cache_effect.csv
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _median_ms(fn, n: int, sweep: torch.Tensor | None = None) -> float:  # type: ignore[no-untyped-def]
    for _ in range(10):
        fn()
    times = []
    for _ in range(n):
        if sweep is not None:
            sweep.add_(1.0)  # evict the caches, not timed
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def run(T: int, threads: int, rounds: int, n: int, sweep_mb: int) -> list[dict[str, object]]:
    from hm2bp.loss import rate_loss
    from hm2bp.nn.network import build_network
    from peers import WEIGHT_SEED, make_inputs

    torch.set_num_threads(threads)
    x, labels = make_inputs(T, 1)
    net = build_network("784-800-10", [20.0, 8.0], generator=torch.Generator().manual_seed(WEIGHT_SEED))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    sweep = torch.zeros(sweep_mb * 1024 * 1024 // 4)

    def infer() -> None:
        with torch.no_grad():
            net(x)

    def step() -> None:
        loss = rate_loss(net(x, labels).sum(0), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE, check=False).stdout.strip()
    rows = []
    for r in range(rounds):
        warm = _median_ms(infer, n)
        cold = _median_ms(infer, n, sweep)
        train = _median_ms(step, n)
        rows.append({"T": T, "batch": 1, "round": r, "threads": threads, "infer_warm_ms": round(warm, 4),
                     "infer_cold_ms": round(cold, 4), "train_step_ms": round(train, 4),
                     "step_over_warm": round(train / warm, 3), "step_over_cold": round(train / cold, 3),
                     "sweep_mb": sweep_mb, "torch_version": torch.__version__,
                     "python_version": platform.python_version(), "commit": commit})
        print(f"T={T} round {r}: inference {warm:.3f} ms warm, {cold:.3f} ms cold; training step {train:.3f} ms "
              f"= {train / warm:.2f}x warm, {train / cold:.2f}x cold", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, nargs="*", default=[25, 100, 400])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=300, help="timed calls per measurement (median)")
    ap.add_argument("--sweep-mb", type=int, default=64, help="buffer swept before each cold call")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cache_effect.csv")
    a = ap.parse_args(argv)
    rows = [row for T in a.T for row in run(T, a.threads, a.rounds, a.n, a.sweep_mb)]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tmp.replace(a.out)  # no half-written CSV
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
