"""PNG plots of a run (needs matplotlib; ``pip install matplotlib``).

- ``curves.png``: train loss, train and test accuracy and the learning rate per epoch (``metrics.jsonl``);
- ``raster.png``: the spikes of one test sample through every layer (input included);
- ``counts_hist.png``: firing-count histograms per layer over a batch of test samples;
- ``confusion.png``: the test confusion matrix.

:func:`plot_run` makes all four from a run folder (config, metrics and checkpoint); :func:`plot_all`
from objects already in memory (the end of :func:`hm2bp.train.train`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "have_matplotlib",
    "plot_all",
    "plot_confusion",
    "plot_count_histograms",
    "plot_curves",
    "plot_raster",
    "plot_run",
]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install matplotlib (or the hm2bp 'train' extra)") from e
    return plt


def _save(fig: Any, path: Path) -> Path:
    import io

    from .checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    _plt().close(fig)
    return path


def _marker_size(n_points: int) -> float:
    """Visible markers for a few epochs (a lone point after one epoch), small ones for long curves."""
    return 7.0 if n_points <= 3 else 5.0 if n_points <= 30 else 2.5


def plot_curves(metrics: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Loss, accuracies and learning rate per epoch (epochs counted from 1, integer ticks)."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    first = metrics[0]["epoch"] if metrics else 1  # logs before epochs were counted from 1 start at 0
    ep = [m["epoch"] + (1 - first if first == 0 else 0) for m in metrics]
    ms = _marker_size(len(ep))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(ep, [m["train_loss"] for m in metrics], "o-", ms=ms)
    axes[0].set(xlabel="epoch", ylabel="train loss", title="training loss")
    axes[1].plot(ep, [100 * m["train_acc"] for m in metrics], "o-", ms=ms, label="train")
    axes[1].plot(ep, [100 * m["test_acc"] for m in metrics], "s-", ms=ms, label="test")
    if any(m.get("val_acc") is not None for m in metrics):
        axes[1].plot(ep, [100 * m["val_acc"] if m.get("val_acc") is not None else float("nan") for m in metrics],
                     "^-", ms=ms, label="validation")
    axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    axes[1].legend()
    axes[2].plot(ep, [m["lr"] for m in metrics], "o-", ms=ms)
    axes[2].set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3), useMathText=True)  # short tick labels
    for ax in axes:
        ax.grid(alpha=0.3)
        if len(ep) <= 10:
            ax.set_xticks(ep)
            ax.set_xlim(min(ep) - 0.5, max(ep) + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_raster(layer_spikes: list[Tensor], path: str | os.PathLike[str], names: list[str] | None = None,
                title: str = "") -> Path:
    """Spike raster of one sample: ``layer_spikes[k]`` is ``[T, N]`` (or ``[T, C, H, W]``, flattened)."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    n = len(layer_spikes)
    row_in = 1.6  # inches per layer
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.2 + row_in * n), sharex=True, squeeze=False)
    for k, s in enumerate(layer_spikes):
        s2 = s.reshape(s.shape[0], -1).float()
        t, i = torch.nonzero(s2, as_tuple=True)
        ax = axes[k, 0]
        # a tick as tall as most of one neuron's row: the 10 output neurons get long, thick ticks
        length = min(0.8 * row_in * 72 / max(s2.shape[1], 1), 9.0)
        ax.scatter(t.numpy(), i.numpy(), s=max(length, 0.8) ** 2, c="tab:red" if k == n - 1 else "k", marker="|",
                   linewidths=1.5 if length > 3 else 0.6)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.5, s2.shape[1] - 0.5)
        ax.set_xlim(-0.5, s2.shape[0] - 0.5)
        label = names[k] if names else f"layer {k}"
        ax.set_ylabel(f"{label}\n({s2.shape[1]})", fontsize=8)
    axes[-1, 0].set_xlabel("time step")
    if title:
        axes[0, 0].set_title(title)
    return _save(fig, Path(path))


def plot_count_histograms(layer_counts: list[Tensor], path: str | os.PathLike[str],
                          names: list[str] | None = None) -> Path:
    """Histogram of per-neuron firing counts of every layer (``layer_counts[k]``: any shape)."""
    plt = _plt()
    n = len(layer_counts)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for k, c in enumerate(layer_counts):
        ax = axes[k // cols, k % cols]
        v = c.reshape(-1).float().numpy()
        ax.hist(v, bins=min(40, max(int(v.max()) + 1, 1)) if v.size else 10, color="tab:blue")
        silent = float((v == 0).mean()) if v.size else 0.0
        ax.set_title(f"{names[k] if names else f'layer {k}'}: mean {v.mean():.2f}, {100 * silent:.0f}% silent",
                     fontsize=9)
        ax.set_xlabel("spike count")
    for k in range(n, rows * cols):
        axes[k // cols, k % cols].axis("off")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_confusion(labels: Tensor, predictions: Tensor, n_classes: int, path: str | os.PathLike[str]) -> Path:
    """Confusion matrix (rows: true class, columns: predicted)."""
    plt = _plt()
    cm = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    cm.index_put_((labels.long(), predictions.long()), torch.ones_like(labels, dtype=torch.int64), accumulate=True)
    size = max(4.0, min(14.0, 0.45 * n_classes + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm.numpy(), cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if n_classes <= 20:
        for i in range(n_classes):
            for j in range(n_classes):
                v = int(cm[i, j])
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                            color="white" if v > cm.max() / 2 else "black")
    if n_classes <= 64:  # every class labelled (not matplotlib's every other one)
        small = n_classes > 20
        ax.set_xticks(range(n_classes))
        ax.set_yticks(range(n_classes))
        ax.tick_params(labelsize=6 if small else 9)
        if small:
            ax.tick_params(axis="x", labelrotation=90)
    acc = float(cm.diag().sum()) / max(int(cm.sum()), 1)
    ax.set(xlabel="predicted", ylabel="true", title=f"test confusion matrix ({100 * acc:.2f}%)")
    return _save(fig, Path(path))


def _layer_names(model: Any) -> list[str]:
    from ..nn.layers import Flatten

    names = []
    for k, layer in enumerate(m for m in model.layers if not isinstance(m, Flatten)):
        names.append(f"{type(layer).__name__.replace('Spiking', '').lower()} {k + 1}")
    names[-1] = "output"
    return names


@torch.no_grad()
def plot_all(model: Any, test_set: Any, out_dir: str | os.PathLike[str], *, metrics: list[dict[str, Any]] | None,
             eval_result: Any | None = None, n_hist: int = 64, device: str | torch.device = "cpu") -> list[Path]:
    """Write the four plots into ``out_dir`` and return their paths."""
    out = Path(out_dir)
    paths: list[Path] = []
    if metrics:
        paths.append(plot_curves(metrics, out / "curves.png"))
    n = min(n_hist, len(test_set))
    x = test_set.get(torch.arange(n), 0).to(device, torch.float32)
    was_training = model.training
    model.eval()
    model(x, record=True)
    model.train(was_training)
    layers = [s.cpu() for s in model.hidden_spikes]
    names = ["input"] + _layer_names(model)
    inputs = x.cpu()
    label = int(test_set.labels[0])
    pred = int(layers[-1][:, 0].sum(0).argmax())
    paths.append(plot_raster([inputs[:, 0]] + [s[:, 0] for s in layers], out / "raster.png", names,
                             title=f"test sample 0: label {label}, predicted {pred}"))
    paths.append(plot_count_histograms([s.sum(0) for s in layers], out / "counts_hist.png", names[1:]))
    if eval_result is None:
        from .evaluate import evaluate

        eval_result = evaluate(model, test_set, device=device, show_progress=True, desc="evaluation for the plots")
    paths.append(plot_confusion(eval_result.labels, eval_result.predictions, test_set.n_classes,
                                out / "confusion.png"))
    return paths


def plot_run(run_dir: str | os.PathLike[str], *, checkpoint: str | os.PathLike[str] | None = None,
             data_dir: str | None = None, n_test: int | None = None, device: str = "cpu") -> list[Path]:
    """Make the plots of a finished (or interrupted) run folder from its checkpoint and metrics."""
    from ..config import apply_overrides
    from .datasets import load_datasets
    from .evaluate import model_from_checkpoint
    from .runtime import num_threads
    from .metrics import read_metrics

    run = Path(run_dir)
    ck_path = Path(checkpoint) if checkpoint else next((run / f for f in ("best.pt", "last.pt") if (run / f).is_file()),
                                                        run / "last.pt")
    model, cfg, ck = model_from_checkpoint(ck_path, device)
    over = []
    if data_dir:
        over.append(f"data.data_dir={data_dir}")
    if n_test:
        over.append(f"data.n_test={n_test}")
    cfg = apply_overrides(cfg, over)
    metrics = read_metrics(run) if (run / "metrics.jsonl").is_file() else ck.get("metrics")
    with num_threads(cfg.train.threads):
        _, test_set = load_datasets(cfg)
        return plot_all(model, test_set, run, metrics=metrics, device=device)
