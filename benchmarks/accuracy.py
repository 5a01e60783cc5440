"""The accuracy experiments of issue #13, each run from its preset, one CSV row per trained model.

    python benchmarks/accuracy.py --data-dir ../shared/data protocol            # + snnTorch and SpikingJelly
    python benchmarks/accuracy.py --data-dir ../shared/data emnist_fc           # + the ReLU MLP baseline
    python benchmarks/accuracy.py --data-dir ../shared/data online --seeds 0 1 2
    python benchmarks/accuracy.py --data-dir ../shared/data mnist_fc --threads 1 --out-root /tmp/acc
    python benchmarks/accuracy.py table            # the CSV as the Markdown table of docs/results.md
    python benchmarks/accuracy.py curve RUN_DIR    # a run's metrics.jsonl as a per-epoch Markdown table

Every row goes to ``benchmarks/results/accuracy.csv`` (appended; ``--csv`` elsewhere) with the columns
:data:`COLUMNS`; accuracies are fractions in [0, 1]. ``test_acc`` of an hm2bp row is the test accuracy of the
checkpoint chosen on the validation split (``best.pt``), or of the last epoch when the experiment has no
validation split (the protocol and the exact online mode); ``val_acc`` is that checkpoint's validation
accuracy (empty without a split); ``epochs`` counts the epochs trained (early stopping may end a run
sooner); ``train_s`` is the training time without the evaluation passes. Extra config overrides for the
hm2bp runs follow ``--`` (e.g. ``-- train.lr=2e-2``); the row records them (``overrides``) and the run's own
T, batch and mode.

Experiments (:data:`EXPERIMENTS`): the preset, its mode, and what the experiment fixes on top of the
preset (the mini-batch recipe itself is the preset's ``[minibatch]`` table, see docs/results.md):

- ``protocol``: the fixed comparison protocol: MNIST 784-800-10, the first 10,000 training images, one
  epoch, T 100, batch 128, Adam, tested on the first 2,000 test images. snnTorch and SpikingJelly
  (surrogate-gradient BPTT, ``peers.py``, in their own virtual environments, ``setup_peer_envs.sh``) train
  in the same run on the very same input spikes (hm2bp's rasters, passed as an ``.npz``).
- ``mnist_fc``: 784-800-10, T 400, the full set, up to 20 epochs, best checkpoint on validation.
- ``emnist_fc``: EMNIST-Balanced (the subset in ../shared/data); a non-spiking 784-800-800-47 ReLU MLP with
  Adam trains on the same images, validation split and epochs (row ``library=mlp``).
- ``nmnist_fc``, ``fsdd``, ``mnist_cnn``: their presets in mini-batch mode.
- ``online``: the exact online mode (the authors' procedure) for one epoch; also appends the training
  accuracy and the authors' logged cost to ``online_epoch.csv`` beside the CSV.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENVS = HERE / ".envs"
RESULTS = HERE / "results"

COLUMNS = ["experiment", "dataset", "arch", "T", "mode", "batch", "epochs", "seed", "val_acc", "test_acc", "train_s",
           "library", "overrides", "commit"]
ONLINE_COLUMNS = ["seed", "train_acc", "test_acc", "train_cost_as_logged", "train_s", "commit"]


@dataclass(frozen=True)
class Experiment:
    preset: str
    data: str  # sub-folder of --data-dir
    mode: str
    overrides: tuple[str, ...] = ()
    peers: bool = False
    mlp: bool = False


EXPERIMENTS: dict[str, Experiment] = {
    "protocol": Experiment("mnist_fc", "mnist", "minibatch",
                           ("data.n_train=10000", "data.n_test=2000", "model.T=100", "train.epochs=1",
                            "train.batch_size=128", "data.val_fraction=0", "train.early_stop_patience=0",
                            # the recipe's targets 35/5/5 scaled to T = 100 (docs/results.md ablation)
                            "model.desired=10", "model.undesired=1", "model.margin=1",
                            "train.lr_schedule=constant", "train.lr=2e-2"), peers=True),
    "mnist_fc": Experiment("mnist_fc", "mnist", "minibatch", ("train.epochs=20",)),
    "emnist_fc": Experiment("emnist_fc", "emnist", "minibatch", (), mlp=True),
    "nmnist_fc": Experiment("nmnist_fc", "nmnist", "minibatch"),
    "fsdd": Experiment("fsdd", "fsdd", "minibatch"),
    "mnist_cnn": Experiment("mnist_cnn", "mnist", "minibatch"),
    "online": Experiment("mnist_fc", "mnist", "online", ("train.epochs=1",)),
}


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head + ("-dirty" if dirty else "")


def append_rows(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Append ``rows`` to the CSV at ``path`` (header first when the file is new). A file whose header is not
    ``columns`` is refused: appending would shift every field of the new rows under the wrong heading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != columns:
            raise ValueError(f"{path}: its header is {','.join(header)!r}, not {','.join(columns)!r}; "
                             "give the file these columns (or pass --csv with a new file)")
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


def _provenance(a: argparse.Namespace) -> dict[str, str]:
    """The columns every row shares: the config overrides given after ``--`` and the commit."""
    return {"overrides": " ".join(a.overrides), "commit": a.commit}


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


# ----------------------------------------------------------------------------------------------- hm2bp
def hm2bp_config(name: str, exp: Experiment, a: argparse.Namespace, seed: int) -> Any:
    from hm2bp.config import load_config

    out = Path(a.out_root) / f"{name}_s{seed}"
    flags = [f"data.data_dir={Path(a.data_dir) / exp.data}", f"train.mode={exp.mode}", f"train.seed={seed}",
             f"train.threads={a.threads}", f"train.out_dir={out}", "train.plots=false", "train.tensorboard=false",
             *exp.overrides, *a.overrides]
    return load_config(exp.preset, flags)


def run_hm2bp(name: str, exp: Experiment, a: argparse.Namespace, seed: int) -> tuple[dict[str, Any], Any, Any]:
    from hm2bp.train import train

    cfg = hm2bp_config(name, exp, a, seed)
    print(f"[{name}] hm2bp {cfg.data.dataset} {cfg.model.arch} T={cfg.model.T} {cfg.train.mode} "
          f"batch {cfg.train.batch_size}, up to {cfg.train.epochs} epochs, seed {seed} -> {cfg.out_dir}", flush=True)
    res = train(cfg, resume=a.resume, echo=lambda s: print(f"[{name}] {s}", flush=True))
    on_val = res.selected_on == "val"
    row = {"experiment": name, "dataset": cfg.data.dataset, "arch": cfg.model.arch, "T": cfg.model.T,
           "mode": cfg.train.mode, "batch": cfg.train.batch_size, "epochs": len(res.metrics), "seed": seed,
           "val_acc": _fmt(res.selected_val_acc if on_val else None),
           "test_acc": _fmt(res.selected_test_acc if on_val else res.test_acc),
           "train_s": f"{sum(m.get('train_time_s', m['epoch_time_s']) for m in res.metrics):.1f}",
           "library": "hm2bp", **_provenance(a)}
    return row, cfg, res


# ------------------------------------------------------------------------------------------------ peers
def write_rasters(cfg: Any, path: Path) -> None:
    """The training and test spikes hm2bp trained on, bit-packed per sample, for the peer children."""
    import numpy as np
    import torch

    from hm2bp.train.datasets import load_splits

    s = load_splits(cfg)
    parts: dict[str, Any] = {}
    for split, ds in (("train", s.train), ("test", s.test)):
        chunks = []
        for i in range(0, len(ds), 500):
            x = ds.get(torch.arange(i, min(i + 500, len(ds))), 0)  # [T, B, N] bool
            chunks.append(np.packbits(x.permute(1, 0, 2).reshape(x.shape[1], -1).numpy(), axis=1))
        parts[f"{split}_spikes"] = np.concatenate(chunks)
        parts[f"{split}_labels"] = ds.labels.numpy()
        parts[f"{split}_shape"] = np.array([len(ds), cfg.model.T, ds.n_inputs])
    np.savez(path, **parts)


def run_peer(library: str, rasters: Path, cfg: Any, a: argparse.Namespace, seed: int) -> dict[str, Any]:
    py = ENVS / library / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"{py} not found: run `bash benchmarks/setup_peer_envs.sh {library}` first")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), PYTHONNOUSERSITE="1")
    cmd = [str(py), str(HERE / "peer_accuracy.py"), "--library", library, "--data", str(rasters),
           "--batch", str(cfg.train.batch_size), "--epochs", str(cfg.train.epochs), "--lr", str(a.peer_lr),
           "--seed", str(seed), "--threads", str(a.threads)]
    print(f"[protocol] {library}: {' '.join(cmd[1:])}", flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.peer_timeout, cwd=ROOT, check=False)
    result = next((json.loads(ln[7:]) for ln in reversed(done.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if result is None:
        raise SystemExit(f"{library} failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}")
    print(f"[protocol] {library} {result['library_version']}: test {100 * result['test_acc']:.2f}%, "
          f"train {result['train_s']:.1f}s", flush=True)
    return {"experiment": "protocol", "dataset": cfg.data.dataset, "arch": cfg.model.arch, "T": cfg.model.T,
            "mode": "bptt", "batch": cfg.train.batch_size, "epochs": cfg.train.epochs, "seed": seed, "val_acc": "",
            "test_acc": _fmt(result["test_acc"]), "train_s": f"{result['train_s']:.1f}", "library": library,
            **_provenance(a)}


# -------------------------------------------------------------------------------------------------- MLP
def run_mlp(name: str, cfg: Any, a: argparse.Namespace, seed: int) -> dict[str, Any]:
    """A non-spiking ReLU MLP of the same layer sizes (Adam, cross-entropy) on the same images and splits;
    the epoch with the best validation accuracy (test accuracy without a split... the last epoch)."""
    import torch
    from torch import nn

    from hm2bp.train.datasets import load_splits

    torch.manual_seed(seed)
    s = load_splits(cfg)
    sizes = [int(v) for v in cfg.model.arch.split("-")]

    def xy(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return ds.images.reshape(len(ds), -1).float() / 255.0, ds.labels

    (xtr, ytr), (xte, yte) = xy(s.train), xy(s.test)
    val = xy(s.val) if s.val is not None else None
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(net.parameters(), lr=a.mlp_lr)
    gen = torch.Generator().manual_seed(seed)

    def acc(x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float((net(x).argmax(1) == y).double().mean())

    best, t_train, epochs = (-1.0, 0.0, 0.0), 0.0, cfg.train.epochs
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(order), a.mlp_batch):
            idx = order[i : i + a.mlp_batch]
            opt.zero_grad()
            nn.functional.cross_entropy(net(xtr[idx]), ytr[idx]).backward()
            opt.step()
        t_train += time.perf_counter() - t0
        v, te = (acc(*val) if val is not None else -1.0), acc(xte, yte)
        print(f"[{name}] mlp epoch {epoch + 1}: val {100 * v:.2f}%  test {100 * te:.2f}%", flush=True)
        if val is None or v > best[0]:
            best = (v, te, float(epoch + 1))
    return {"experiment": name, "dataset": cfg.data.dataset, "arch": cfg.model.arch, "T": "", "mode": "relu-mlp",
            "batch": a.mlp_batch, "epochs": epochs, "seed": seed, "val_acc": _fmt(best[0] if val is not None else None),
            "test_acc": _fmt(best[1]), "train_s": f"{t_train:.1f}", "library": "mlp", **_provenance(a)}


# ------------------------------------------------------------------------------------------------ table
TARGETS = {"protocol": ">= 90.0 % (peers: BPTT, same spikes)", "mnist_fc": ">= 98.5 %",
           "emnist_fc": "within 3 points of the MLP", "nmnist_fc": ">= 90 %", "fsdd": ">= 95 %",
           "online": "authors' log 97.32 %", "mnist_cnn": ">= 99.0 % (paper 99.49 %, 200 online epochs)"}


def markdown_table(path: Path) -> str:
    """The CSV as the Markdown table of docs/results.md (one line per row, in file order)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    pct = lambda v: f"{100 * float(v):.2f} %" if v else "–"  # noqa: E731
    code = lambda v: f"`{v}`" if v else "–"  # noqa: E731
    out = ["| experiment | library | dataset, arch, T | mode, batch | epochs | seed | val | **test** | train s | "
           "overrides | commit | target |", "|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        out.append(f"| {r['experiment']} | {r['library']} | {r['dataset']} {r['arch']}, T {r['T'] or '–'} | "
                   f"{r['mode']}, {r['batch']} | {r['epochs']} | {r['seed']} | {pct(r['val_acc'])} | "
                   f"**{pct(r['test_acc'])}** | {r['train_s']} | {code(r['overrides'])} | `{r['commit']}` | "
                   f"{TARGETS.get(r['experiment'], '')} |")
    return "\n".join(out)


def curve_table(run_dir: Path) -> str:
    """A run's ``metrics.jsonl`` as the per-epoch Markdown table of docs/results.md (the last record of each
    epoch: a resumed run may have logged an epoch once only)."""
    per_epoch: dict[int, dict[str, Any]] = {}
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            if line.strip():
                m = json.loads(line)
                per_epoch[int(m["epoch"])] = m
    pct = lambda v: f"{100 * v:.2f} %" if v is not None else "–"  # noqa: E731
    out = ["| epoch | lr (end) | training acc. (during the epoch) | val | test | training s |",
           "|---:|---:|---:|---:|---:|---:|"]
    for e, m in sorted(per_epoch.items()):
        out.append(f"| {e} | {m['lr']:.2e} | {pct(m['train_acc'])} | {pct(m.get('val_acc'))} | "
                   f"{pct(m['test_acc'])} | {m.get('train_time_s', m['epoch_time_s']):.0f} |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- main
def run_experiment(name: str, a: argparse.Namespace) -> list[dict[str, Any]]:
    exp = EXPERIMENTS[name]
    rows: list[dict[str, Any]] = []
    for seed in a.seeds:
        row, cfg, res = run_hm2bp(name, exp, a, seed)
        rows.append(row)
        append_rows(Path(a.csv), [row], COLUMNS)
        if name == "online":
            last = res.metrics[-1]
            append_rows(Path(a.csv).with_name("online_epoch.csv"), [{
                "seed": seed, "train_acc": _fmt(last["train_acc"]), "test_acc": _fmt(last["test_acc"]),
                "train_cost_as_logged": f"{last['train_cost_as_logged']:.3f}", "train_s": row["train_s"],
                "commit": a.commit}], ONLINE_COLUMNS)
        if exp.peers and not a.no_peers:
            with tempfile.TemporaryDirectory(prefix="hm2bp_acc_") as tmp:
                rasters = Path(tmp) / "rasters.npz"
                write_rasters(cfg, rasters)
                for lib in ("snntorch", "spikingjelly"):
                    peer_row = run_peer(lib, rasters, cfg, a, seed)
                    rows.append(peer_row)
                    append_rows(Path(a.csv), [peer_row], COLUMNS)
        if exp.mlp and not a.no_mlp:
            mlp_row = run_mlp(name, cfg, a, seed)
            rows.append(mlp_row)
            append_rows(Path(a.csv), [mlp_row], COLUMNS)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["table"]:  # python benchmarks/accuracy.py table [CSV]: the Markdown table of docs/results.md
        print(markdown_table(Path(argv[1] if len(argv) > 1 else RESULTS / "accuracy.csv")))
        return 0
    if argv[:1] == ["curve"] and len(argv) == 2:  # python benchmarks/accuracy.py curve RUN_DIR
        print(curve_table(Path(argv[1])))
        return 0
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="+", choices=sorted(EXPERIMENTS))
    p.add_argument("--data-dir", required=True, help="folder holding mnist/, emnist/, nmnist/, fsdd/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--csv", default=str(RESULTS / "accuracy.csv"))
    p.add_argument("--out-root", default=str(Path(tempfile.gettempdir()) / "hm2bp_accuracy"),
                   help="run folders <out-root>/<experiment>_s<seed>")
    p.add_argument("--resume", action="store_true", help="continue each hm2bp run from its last.pt")
    p.add_argument("--no-peers", action="store_true", help="protocol: skip snnTorch and SpikingJelly")
    p.add_argument("--peer-lr", type=float, default=1e-3, help="Adam lr of the peers (harness: 1e-3)")
    p.add_argument("--peer-timeout", type=float, default=7200.0)
    p.add_argument("--no-mlp", action="store_true", help="emnist_fc: skip the ReLU MLP")
    p.add_argument("--mlp-lr", type=float, default=1e-3)
    p.add_argument("--mlp-batch", type=int, default=32)
    p.add_argument("--commit", default="", help="the commit column (default: git HEAD of this checkout, "
                                                  "'-dirty' when src/ has changes); for a run from an exported copy")
    a = p.parse_args(argv)
    a.overrides = extra
    a.commit = a.commit or _git_commit()
    for name in a.experiments:
        for row in run_experiment(name, a):
            print("ROW " + json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
