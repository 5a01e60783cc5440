"""The GPU check of issue #6, prepared as one short script for a session that is lent a device machine.

It measures, on one device (``--device``, default ``cuda``), MNIST 784-800-10 with HM2-BP:

1. agreement: spike counts and weight gradients of the device path against the CPU path (compiled event
   kernels) on the same inputs and weights (float32; reports the largest differences, and how many output
   counts differ); with ``--device cpu`` the "device" side is the pure-torch path (``HM2BP_BACKEND=torch``),
   the code a GPU runs;
2. throughput: training samples/s (forward, rate loss, HM2-BP backward, fused Adam) and inference
   samples/s at T = 400 for each ``--batch``, median of timed steps after warm-up, with the device
   synchronised around every step; peak device memory per configuration.

Everything goes to one JSON file (default ``$OUT/gpu_check.json`` when ``$OUT`` is set, else
``benchmarks/results/gpu_check.json``) and a line per figure on stdout. The issue's target: ≥ 10,000
training samples/s at T = 400, batch ≥ 256. On a machine without a GPU, ``--device cpu --quick`` runs the
same code in seconds (a check of the script, not a measurement).

    python benchmarks/gpu_check.py                          # on the device machine (~1-3 min)
    python benchmarks/gpu_check.py --device cpu --quick     # smoke run of the script here
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _network(device: torch.device):  # type: ignore[no-untyped-def]
    from hm2bp.nn.network import build_network
    from peers import WEIGHT_SEED

    net = build_network("784-800-10", [20.0, 8.0], generator=torch.Generator().manual_seed(WEIGHT_SEED))
    return net.to(device)


def agreement(device: torch.device, T: int, batch: int) -> dict[str, float]:
    """Counts and gradients of one training step on ``device`` against the CPU event path."""
    from hm2bp.loss import rate_loss
    from peers import make_inputs

    x, labels = make_inputs(T, batch)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, dev in (("cpu", torch.device("cpu")), ("device", device)):
        # On a CPU "device" the second run takes the pure-torch path, the code a GPU runs.
        dense = name == "device" and dev.type == "cpu"
        before = os.environ.get("HM2BP_BACKEND")
        if dense:
            os.environ["HM2BP_BACKEND"] = "torch"
        try:
            net = _network(dev)
            counts = net(x.to(dev), labels.to(dev)).sum(0)
            rate_loss(counts, labels.to(dev)).backward()
        finally:
            if dense:
                if before is None:
                    os.environ.pop("HM2BP_BACKEND", None)
                else:
                    os.environ["HM2BP_BACKEND"] = before
        out[name] = {"counts": counts.detach().cpu(), **{f"grad{i}": p.grad.detach().cpu()
                                                        for i, p in enumerate(net.parameters())}}
    res = {"counts_differing": int((out["cpu"]["counts"] != out["device"]["counts"]).sum()),
           "counts_total": int(out["cpu"]["counts"].numel())}
    for k in out["cpu"]:
        if k.startswith("grad"):
            a, b = out["cpu"][k], out["device"][k]
            res[f"{k}_max_abs_diff"] = float((a - b).abs().max())
            res[f"{k}_max_abs"] = float(a.abs().max())
    return res


def throughput(device: torch.device, T: int, batch: int, steps: int) -> dict[str, float]:
    """Median training and inference samples/s and the peak device memory of one configuration."""
    from hm2bp.loss import rate_loss
    from peers import make_inputs

    x, labels = make_inputs(T, batch)
    x, labels = x.to(device), labels.to(device)
    net = _network(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=device.type in ("cuda", "cpu"))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> None:
        loss = rate_loss(net(x, labels).sum(0), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.no_grad():
            net(x)

    def timed(fn) -> list[float]:  # type: ignore[no-untyped-def]
        for _ in range(2):  # warm-up: kernel selection, allocator, Adam state
            fn()
        times = []
        for _ in range(steps):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return times

    train = timed(train_step)
    inf = timed(infer)
    res = {"T": T, "batch": batch, "steps": steps,
           "train_samples_per_s": batch / statistics.median(train), "train_step_min_s": min(train),
           "infer_samples_per_s": batch / statistics.median(inf), "infer_step_min_s": min(inf)}
    if device.type == "cuda":
        res["peak_device_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--T", type=int, default=400)
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration (median)")
    ap.add_argument("--quick", action="store_true", help="T = 30, batch 8, 2 steps: a check of the script")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.T, a.batch, a.steps = 30, [8], 2
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu --quick to check the script)", file=sys.stderr)
        return 2
    out = a.out or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT")
                    else HERE / "results" / "gpu_check.json")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE,
                            check=False).stdout.strip()
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    report["agreement"] = agreement(device, min(a.T, 100), 4)
    print("agreement with the CPU path:", json.dumps(report["agreement"]), flush=True)
    rows = []
    for batch in a.batch:
        try:
            row = throughput(device, a.T, batch, a.steps)
        except torch.OutOfMemoryError as exc:
            row = {"T": a.T, "batch": batch, "error": f"out of memory: {str(exc)[:200]}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    report["throughput"] = rows
    report["wall_s"] = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)  # no half-written report
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
