"""Ablations of the mini-batch recipe on the fixed protocol (issue #13 item 1): the protocol experiment of
``accuracy.py`` (MNIST 784-800-10, first 10,000 training images, 1 epoch, T 100, Adam, first 2,000 test
images) under one change each, every variant with the same seeds, so that the spread between seeds shows
what a difference must exceed to mean anything.

    python benchmarks/recipe_ablation.py --data-dir ../shared/data --threads 1 --seeds 0 1 2 \\
        base "warmup_steps=20" "fc_init=0.5" "fc_init=2" "batch=32" "batch=64" "batch=256"

A variant is ``base`` or ``KEY=VALUE`` of :data:`VARIANTS` (config overrides on top of the protocol's).
Appends one row per run to ``benchmarks/results/recipe_ablation.csv``: variant, overrides, seed, test
accuracy, training accuracy during the epoch, training seconds, commit.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from accuracy import EXPERIMENTS, RESULTS, Experiment, _git_commit, append_rows, run_hm2bp

COLUMNS = ["variant", "overrides", "seed", "test_acc", "train_acc", "train_s", "commit"]

VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "warmup_steps=20": ("train.warmup_steps=20",),
    "fc_init=0.5": ("model.fc_init=0.5",),
    "fc_init=2": ("model.fc_init=2.0",),
    # a fixed number of images (10,000, one epoch): Adam's lr scaled with sqrt(batch / 128) from 2e-2
    "batch=32": ("train.batch_size=32", "train.lr=1e-2"),
    "batch=64": ("train.batch_size=64", "train.lr=1.4e-2"),
    "batch=256": ("train.batch_size=256", "train.lr=2.8e-2"),
    "batch=64,lr=2e-2": ("train.batch_size=64",),
    "cosine": ("train.lr_schedule=cosine",),
    "reg_lambda=10": ("train.reg_lambda=10",),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    p.add_argument("--data-dir", required=True, help="folder holding mnist/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--csv", default=str(RESULTS / "recipe_ablation.csv"))
    p.add_argument("--out-root", default=str(Path(tempfile.gettempdir()) / "hm2bp_recipe_ablation"))
    a = p.parse_args(argv)
    a.resume, a.commit = False, _git_commit()
    base = EXPERIMENTS["protocol"]
    for name in a.variants:
        exp = Experiment(base.preset, base.data, base.mode, base.overrides + VARIANTS[name])
        for seed in a.seeds:
            a.overrides = [f"train.out_dir={Path(a.out_root) / name.replace('=', '_')}_s{seed}"]
            row, _, res = run_hm2bp("protocol", exp, a, seed)
            out: dict[str, Any] = {"variant": name, "overrides": " ".join(VARIANTS[name]), "seed": seed,
                                   "test_acc": row["test_acc"], "train_acc": f"{res.metrics[-1]['train_acc']:.4f}",
                                   "train_s": row["train_s"], "commit": a.commit}
            append_rows(Path(a.csv), [out], COLUMNS)
            print(f"[{name}] seed {seed}: test {out['test_acc']}, train {out['train_acc']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
