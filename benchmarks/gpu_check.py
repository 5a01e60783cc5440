"""The GPU check of issues #6 and #15, prepared as one call of at most ~5 minutes on a machine with a GPU.

On one device (``--device``, default ``cuda``) it measures HM2-BP with the backends of ``hm2bp.kernels``:

1. agreement: one training step of MNIST 784-800-10 (T ≤ 100, batch 4) and of the paper's CNN (T ≤ 60,
   batch 2) with every backend that serves the device (``triton``, ``torch``) against the CPU result
   (``cpu``, the compiled C kernels, or ``torch`` on the CPU when they are unavailable): output counts and
   every layer's spikes that differ, and the largest gradient difference per layer;
2. throughput: training samples/s (forward, rate loss, HM2-BP backward, fused Adam) and inference samples/s,
   median of timed steps after warm-up, device synchronised around every step, and the peak device memory,
   for 784-800-10 at T = 400 and each ``--batch`` (default 256 and 1024) and for the CNN
   28x28-15c5-p2-40c5-p2-300-10 at T = 400 and ``--cnn-batch`` (default 64), with the default backend of
   the device, plus the torch backend at the first batch for comparison.

A deadline (``--budget-s``, default 270 s) skips the remaining configurations rather than overrun the call;
everything measured is written to one JSON file (default ``$OUT/gpu_check.json`` when ``$OUT`` is set, else
``benchmarks/results/gpu_check.json``), and one line per figure goes to stdout. Targets of #15: ≥ 10,000
training samples/s for 784-800-10 at T = 400, batch ≥ 256; ≥ 2,000 for the CNN at batch 64.

    python benchmarks/gpu_check.py                                   # on the device machine
    python benchmarks/gpu_check.py --device cpu --quick              # a check of the script here (seconds)
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --device cpu --quick   # plus the interpreted triton kernels
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FC = ("784-800-10", [20.0, 8.0])
CNN = ("28x28-15c5-p2-40c5-p2-300-10", [5.0, 2.0, 12.0, 4.0, 10.0, 10.0])


@contextlib.contextmanager
def backend(name: str | None) -> Iterator[None]:
    """HM2BP_BACKEND=name inside the block (None: the device's default)."""
    before = os.environ.get("HM2BP_BACKEND")
    if name is None:
        os.environ.pop("HM2BP_BACKEND", None)
    else:
        os.environ["HM2BP_BACKEND"] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HM2BP_BACKEND", None)
        else:
            os.environ["HM2BP_BACKEND"] = before


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _network(arch: str, thresholds: list[float], device: torch.device):  # type: ignore[no-untyped-def]
    from hm2bp.nn.network import build_network
    from peers import WEIGHT_SEED

    return build_network(arch, thresholds, generator=torch.Generator().manual_seed(WEIGHT_SEED)).to(device)


def _step(arch: str, thresholds: list[float], x: torch.Tensor, labels: torch.Tensor, device: torch.device
          ) -> dict[str, torch.Tensor]:
    from hm2bp.loss import rate_loss

    net = _network(arch, thresholds, device)
    out = net(x.to(device), labels.to(device), record=True)
    rate_loss(out.sum(0), labels.to(device)).backward()
    res = {f"spikes{i}": s.detach().cpu() for i, s in enumerate(net.hidden_spikes)}
    res.update({f"grad{i}": p.grad.detach().cpu() for i, p in enumerate(net.parameters())})
    return res


def serving_backends(device: torch.device) -> list[str]:
    """The backends that run on ``device`` here (triton on CPU tensors only under TRITON_INTERPRET=1)."""
    from hm2bp.kernels.backend import get_backend
    from hm2bp.kernels.triton_backend import serves_device

    names = ["torch"]
    if serves_device(device.type) is None:
        with contextlib.suppress(ImportError, RuntimeError):
            get_backend("triton")
            names.insert(0, "triton")
    return names


def agreement(device: torch.device, arch: str, thresholds: list[float], T: int, batch: int) -> dict[str, object]:
    """Spikes and gradients of one training step with each backend on ``device`` against the CPU result."""
    from hm2bp.kernels import cpu
    from peers import make_inputs

    n_in = 784
    x, labels = make_inputs(T, batch, n_in=n_in)
    if arch.startswith("28x28"):
        x = x.reshape(T, batch, 1, 28, 28)
    reference = "cpu" if cpu.library() is not None else "torch"
    with backend(reference):
        ref = _step(arch, thresholds, x, labels, torch.device("cpu"))
    res: dict[str, object] = {"arch": arch, "T": T, "batch": batch, "reference": f"{reference} on cpu"}
    for name in serving_backends(device):
        t0 = time.perf_counter()
        with backend(name):
            got = _step(arch, thresholds, x, labels, device)
        row: dict[str, float | int] = {"seconds": round(time.perf_counter() - t0, 3)}
        for key, value in ref.items():
            if key.startswith("spikes"):
                row[f"{key}_differing"] = int((got[key] != value).sum())
            else:
                row[f"{key}_max_abs_diff"] = float((got[key] - value).abs().max())
                row[f"{key}_max_abs"] = float(value.abs().max())
        res[name] = row
    return res


def throughput(device: torch.device, arch: str, thresholds: list[float], T: int, batch: int, steps: int
               ) -> dict[str, object]:
    """Median training and inference samples/s and the peak device memory of one configuration."""
    from hm2bp.kernels.backend import backend_for
    from hm2bp.loss import rate_loss
    from peers import make_inputs

    x, labels = make_inputs(T, batch)
    if arch.startswith("28x28"):
        x = x.reshape(T, batch, 1, 28, 28)
    x, labels = x.to(device), labels.to(device)
    net = _network(arch, thresholds, device)
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

    def timed(fn: Callable[[], None]) -> list[float]:
        for _ in range(2):  # warm-up: kernel compilation and selection, allocator, Adam state
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
    res: dict[str, object] = {
        "arch": arch, "T": T, "batch": batch, "steps": steps, "backend": backend_for(x).name,
        "train_samples_per_s": round(batch / statistics.median(train), 1), "train_step_min_s": min(train),
        "infer_samples_per_s": round(batch / statistics.median(inf), 1), "infer_step_min_s": min(inf)}
    if device.type == "cuda":
        res["peak_device_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return res


def _configs(a: argparse.Namespace, device: torch.device) -> list[tuple[str | None, tuple[str, list[float]], int]]:
    """(backend or None for the default, network, batch) in the order they are measured."""
    rows: list[tuple[str | None, tuple[str, list[float]], int]] = [(None, FC, b) for b in a.batch]
    rows += [(None, CNN, b) for b in a.cnn_batch]
    if device.type == "cuda":
        rows.append(("torch", FC, a.batch[0]))  # the portable path the triton kernels replace
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--T", type=int, default=400)
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--cnn-batch", type=int, nargs="*", default=[64])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration (median)")
    ap.add_argument("--budget-s", type=float, default=270.0, help="skip what would start after this many seconds")
    ap.add_argument("--quick", action="store_true", help="T = 30, batch 8 (CNN 2), 2 steps: a check of the script")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.T, a.batch, a.cnn_batch, a.steps = 30, [8], [2], 2
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu --quick to check the script)", file=sys.stderr)
        return 2
    out = a.out or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT")
                    else HERE / "results" / "gpu_check.json")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE,
                            check=False).stdout.strip()
    from hm2bp.kernels.backend import describe

    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1", "backends": describe((device.type,))}
    print(report["backends"], flush=True)
    t0 = time.perf_counter()
    quick_t = 20 if os.environ.get("TRITON_INTERPRET") == "1" else min(a.T, 100)
    report["agreement"] = [agreement(device, *FC, quick_t, 4 if not a.quick else 2),
                           agreement(device, *CNN, min(quick_t, 60), 2)]
    for row in report["agreement"]:  # type: ignore[attr-defined]
        print("agreement with the CPU result:", json.dumps(row), flush=True)
    rows: list[dict[str, object]] = []
    for name, (arch, thresholds), batch in _configs(a, device):
        if time.perf_counter() - t0 > a.budget_s:
            rows.append({"arch": arch, "batch": batch, "skipped": f"past the {a.budget_s:.0f} s budget"})
            continue
        try:
            with backend(name):
                row = throughput(device, arch, thresholds, a.T, batch, a.steps)
        except torch.OutOfMemoryError as exc:
            row = {"arch": arch, "T": a.T, "batch": batch, "error": f"out of memory: {str(exc)[:200]}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    report["throughput"] = rows
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)  # no half-written report
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
