"""Plot details a reader relies on: visible markers after one epoch, short learning-rate ticks, integer
neuron ticks, visible output spikes, every class labelled in the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hm2bp.train import plots

pytestmark = pytest.mark.requires("matplotlib")  # every test draws a plot


@pytest.fixture()
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    kept: list[Any] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: kept.append(fig) or Path(path))
    return kept


def _texts(labels: Any) -> list[str]:
    return [t.get_text().replace("$\\mathdefault{", "").rstrip("}$") for t in labels]


def test_curves_after_one_epoch(figures: list[Any], tmp_path: Path) -> None:
    plots.plot_curves([{"epoch": 0, "train_loss": 5.0, "train_acc": 0.2, "test_acc": 0.3, "lr": 7.07e-4}],
                      tmp_path / "c.png")
    fig = figures[-1]
    fig.canvas.draw()
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1]  # epochs from 1, no fractional epochs
        assert all(line.get_markersize() >= 6 for line in ax.get_lines())  # a visible point, not a dot
    lr_ax = fig.axes[2]
    assert max(len(t) for t in _texts(lr_ax.get_yticklabels())) <= 6  # scaled ticks (×10⁻⁴), no long labels
    label = lr_ax.yaxis.label.get_window_extent()
    assert all(label.x1 <= t.get_window_extent().x0 for t in lr_ax.get_yticklabels() if t.get_text())


def test_raster_output_spikes_visible_and_integer_ticks(figures: list[Any], tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    layers = [torch.rand(100, 64, generator=g) < 0.1, torch.rand(100, 300, generator=g) < 0.1,
              torch.rand(100, 10, generator=g) < 0.1]
    plots.plot_raster(layers, tmp_path / "r.png", ["input", "hidden", "output"])
    fig = figures[-1]
    fig.canvas.draw()
    out_ax, hidden_ax = fig.axes[2], fig.axes[1]
    assert all(float(v).is_integer() for v in out_ax.get_yticks())
    out_size = out_ax.collections[0].get_sizes()[0]
    assert out_size >= 50 and out_size > 20 * hidden_ax.collections[0].get_sizes()[0]


@pytest.mark.parametrize("n_classes", [10, 47])
def test_confusion_labels_every_class(figures: list[Any], tmp_path: Path, n_classes: int) -> None:
    labels = torch.arange(200) % n_classes
    plots.plot_confusion(labels, (labels + (torch.arange(200) % 3 == 0)) % n_classes, n_classes, tmp_path / "m.png")
    fig = figures[-1]
    fig.canvas.draw()
    ax = fig.axes[0]
    assert _texts(ax.get_xticklabels()) == [str(i) for i in range(n_classes)]
    assert _texts(ax.get_yticklabels()) == [str(i) for i in range(n_classes)]
