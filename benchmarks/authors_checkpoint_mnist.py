"""Accuracy of the authors' trained spiking CNN (Result/checkPoint_cnn_best.txt) imported into hm2bp,
on the MNIST test set with fresh Bernoulli inputs (T = 400, docs/algorithm.md §1.5 and §6.4 step 5).

    python benchmarks/authors_checkpoint_mnist.py --golden ../shared/golden/mm-bp-snn \
        --mnist ../shared/data/mnist --n 10000 --out benchmarks/results/authors_checkpoint_mnist.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from hm2bp.data.idx import load_mnist
from hm2bp.inference import evaluate_images
from hm2bp.io.import_authors import load_authors_cnn_checkpoint


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--golden", type=Path, default=Path("../shared/golden/mm-bp-snn"))
    ap.add_argument("--mnist", type=Path, default=Path("../shared/data/mnist"))
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--T", type=int, default=400)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/authors_checkpoint_mnist.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = load_authors_cnn_checkpoint(args.golden / "Result/checkPoint_cnn_best.txt")
    images, labels = load_mnist(args.mnist, "test")
    images, labels = images[: args.n], labels[: args.n]
    start = time.time()

    def progress(done: int, total: int) -> None:
        print(f"{done}/{total} images, {time.time() - start:.0f} s", file=sys.stderr, flush=True)

    result = evaluate_images(net, images, labels, args.T, batch_size=args.batch,
                             generator=torch.Generator().manual_seed(args.seed), progress=progress)
    record = {
        "images": result.total, "correct": result.correct, "accuracy": result.accuracy,
        "mean_winner_count": result.mean_winner_count, "T": args.T, "seed": args.seed,
        "wall_s": time.time() - start, "threads": args.threads, "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor()} ({torch.get_num_threads()} threads)",
        "command": " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"test accuracy: {100 * result.accuracy:.2f}% ({result.correct}/{result.total}), "
          f"mean winner count {result.mean_winner_count:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
