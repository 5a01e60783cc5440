"""Checks that a run's inputs can train anything: refuse a data set, a layer or a value that yields no spike.

Each check names the file or the configuration key to change. They are called from the data loading and
the training loop with one line each, so the checks live here, in one place.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import SpikeDataset

__all__ = ["PROBE_SAMPLES", "check_dataset_spikes", "warn_if_silent"]

#: Samples of each split looked at before training (the first ones of the loaded order).
PROBE_SAMPLES = 16

_KEYS = {
    "nmnist": "data.nmnist_bin_us and model.T",
    "ti46": "the audio files and model.T",
    "fsdd": "the audio files and model.T",
}


def warn_if_silent(path: Path, raster: np.ndarray, what: str) -> np.ndarray:
    """Return ``raster``, warning (naming the file) when it holds no spike: that sample trains on nothing."""
    if not raster.any():
        warnings.warn(f"{path}: no input spike in T = {raster.shape[0]} steps ({what}); this sample trains "
                      "on nothing", RuntimeWarning, stacklevel=2)
    return raster


def check_dataset_spikes(ds: SpikeDataset, split: str) -> None:
    """Refuse a split whose first :data:`PROBE_SAMPLES` samples hold no input spike at all.

    Per-sample warnings come from the readers (an empty or silent recording); this catches the setting
    that silences everything (e.g. ``data.nmnist_bin_us=0.001`` puts every event past ``T``).
    """
    n = min(len(ds), PROBE_SAMPLES)
    if n == 0:
        return
    images = getattr(ds, "images", None)
    if images is not None:  # rate-coded images: spikes iff some pixel is non-zero (no encoding, no caching)
        silent = not bool(images.any())
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the per-sample warnings would repeat the point
            silent = not bool(ds.get(list(range(n)), 0).any())
    if silent:
        what = _KEYS.get(ds.name, "the data files and model.T")
        raise ConfigError(
            f"dataset {ds.name!r}: the first {n} {split} samples hold no input spike in T = {ds.T} steps; "
            f"the network would train on nothing (check {what})"
        )


class SilentLayerWarning(RuntimeWarning):
    """A hidden layer emitted no spike on the probe samples at initialisation."""


def check_layers_fire(model: Any, ds: SpikeDataset, thresholds: Sequence[float], device: Any = "cpu") -> None:
    """Warn, naming the layer and its ``model.thresholds`` entry, when a hidden layer stays silent on the
    first :data:`PROBE_SAMPLES` training samples at initialisation. The layers above it then receive nothing
    and the weights above it get no gradient (their S-PSPs are 0 without input spikes); the error still
    reaches the weights below it (the silent-neuron constants of docs/algorithm.md §7 item 3), which often
    wake it up: the ``mnist_cnn`` preset's second pool starts silent and trains. Hence a warning, not a
    refusal."""
    import torch

    n = min(len(ds), PROBE_SAMPLES)
    if n == 0:
        return
    with torch.no_grad():
        model(ds.get(list(range(n)), 0).to(device), record=True)
    recorded = list(getattr(model, "hidden_spikes", []))
    model.hidden_spikes = []
    for k, spikes in enumerate(recorded[:-1]):
        if not bool(spikes.any()):
            v = thresholds[k] if k < len(thresholds) else "?"
            warnings.warn(f"layer {k} (threshold {v}, model.thresholds[{k}]) emits no spike on the first {n} "
                          "training samples at initialisation: the layers above it receive nothing and the weights "
                          "above it learn nothing until it fires (the error still reaches the layers below it, "
                          "which can learn to make it fire); if the training accuracy stays at chance, a lower "
                          "threshold or a larger model.fc_init / conv_init lets it fire",
                          SilentLayerWarning, stacklevel=2)
            return
