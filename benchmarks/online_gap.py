"""Cheap ablations of the exact online MNIST epoch (issue #13 item 3): the first N online updates of
``mnist_fc`` under one change each, all from the same seed (same initial weights, order and rasters
unless the change is the order), so that the differences are the change's alone.

    python benchmarks/online_gap.py --data-dir ../shared/data/mnist --steps 5000 --n-test 1000 \
        base order=permutation order=file eps=1e-6 eps=1e-10 no-bias-correction reg=0

Appends one row per variant to ``benchmarks/results/online_gap.csv``: training accuracy and the
authors' logged cost over the N updates, test accuracy on the first ``--n-test`` test images, wall time.
Variants: ``base`` (the preset), ``order=permutation|file`` (a full permutation / no shuffle instead of
5000 swaps), ``eps=X`` (Adam ε), ``no-bias-correction`` (Adam without the 1/(1−β^t) factors), ``reg=0``
(no weight regulariser), ``seed=N``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
COLUMNS = ["variant", "steps", "seed", "train_acc", "train_cost_as_logged", "test_acc", "n_test", "wall_s", "commit"]


class AdamNoBiasCorrection(torch.optim.Optimizer):
    """Adam (β 0.9 / 0.999) without bias correction: w ← w − lr·m/(√v + ε)."""

    def __init__(self, params: Any, lr: float, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                st["m"].mul_(0.9).add_(p.grad, alpha=0.1)
                st["v"].mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                p.addcdiv_(st["m"], st["v"].sqrt().add_(group["eps"]), value=-group["lr"])


def _optimizer_factory(variant: str) -> Any:
    def make(cfg: Any, model: Any) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        if variant == "no-bias-correction":
            return AdamNoBiasCorrection(params, lr=cfg.train.lr)
        eps = float(variant.split("=", 1)[1]) if variant.startswith("eps=") else 1e-8
        return torch.optim.Adam(params, lr=cfg.train.lr, betas=(0.9, 0.999), eps=eps, fused=True)
    return make


def _overrides(variant: str, seed: int) -> list[str]:
    if variant.startswith("order="):
        return [f"train.shuffle={'none' if variant == 'order=file' else 'permutation'}"]
    if variant == "reg=0":
        return ["train.reg_lambda=0"]
    if variant.startswith("seed="):
        return [f"train.seed={int(variant.split('=')[1])}"]
    return []


def run_variant(variant: str, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    from hm2bp.config import load_config
    from hm2bp.train import loop

    seed = int(variant.split("=")[1]) if variant.startswith("seed=") else a.seed
    cfg = load_config("mnist_fc", [f"data.data_dir={a.data_dir}", "train.epochs=1", f"train.max_steps={a.steps}",
                                   f"data.n_test={a.n_test}", f"train.threads={a.threads}", f"train.seed={a.seed}",
                                   f"train.out_dir={out / variant}", "train.plots=false", "train.tensorboard=false",
                                   *_overrides(variant, seed)])
    loop._make_optimizer = _optimizer_factory(variant)  # type: ignore[assignment]
    t0 = time.perf_counter()
    res = loop.train(cfg, quiet=True)
    m = res.metrics[-1]
    row = {"variant": variant, "steps": a.steps, "seed": seed, "train_acc": f"{m['train_acc']:.4f}",
           "train_cost_as_logged": f"{m['train_cost_as_logged']:.3f}", "test_acc": f"{m['test_acc']:.4f}",
           "n_test": a.n_test, "wall_s": f"{time.perf_counter() - t0:.0f}", "commit": a.commit}
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+")
    p.add_argument("--data-dir", required=True, help="the MNIST folder")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--csv", default=str(HERE / "results" / "online_gap.csv"))
    p.add_argument("--commit", default="")
    a = p.parse_args(argv)
    if not a.commit:
        a.commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                                  check=False).stdout.strip()
    path = Path(a.csv)
    with tempfile.TemporaryDirectory(prefix="hm2bp_gap_") as tmp:
        for variant in a.variants:
            row = run_variant(variant, a, Path(tmp))
            new = not path.exists() or path.stat().st_size == 0
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=COLUMNS)
                if new:
                    w.writeheader()
                w.writerow(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
