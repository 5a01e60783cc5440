"""After each epoch: say why updates were skipped, warn when the weights diverge, and stop a run that
learns nothing (every update skipped, or weights no longer finite) with an error, so it exits non-zero.

The cause named is the one the state points to, in this order: non-finite weights; weights far beyond
their initial range (the learning rate); an initial range that float32 potentials overflow; the output
lateral loop gain (docs/algorithm.md §7.15), which is what remains when the weights are moderate.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import torch

from ..errors import NumericalError

__all__ = ["DivergenceWarning", "report_epoch_updates", "skip_cause"]

#: Weights this many times their initial bound are taken as diverging.
DIVERGED = 1e6


class DivergenceWarning(RuntimeWarning):
    """The weights grew far beyond their initial range: the learning rate is too large."""


def _largest(model: torch.nn.Module) -> tuple[str, float]:
    name, top = "", 0.0
    for n, p in model.named_parameters():
        v = float(p.detach().abs().max()) if p.numel() else 0.0
        if not v <= top:  # NaN compares false: it wins
            name, top = n, v
    return name, top


def skip_cause(cfg: Any, model: torch.nn.Module) -> str:
    """What most likely made the gradients non-finite, in words naming the key to change."""
    m, t = cfg.model, cfg.train
    name, top = _largest(model)
    init = max(m.fc_init, m.conv_init)
    if not top < float("inf"):
        return f"the weights are no longer finite ({name}); train.lr = {t.lr:g} is too large"
    if top > DIVERGED * init:
        return (f"the weights diverged (max |w| = {top:.3g} in {name}, initial bound {init:g}); "
                f"train.lr = {t.lr:g} is too large")
    if init >= 1e6:
        return f"model.fc_init / conv_init = {init:g} overflows the float32 potentials"
    if m.lateral_inhibition > 0:
        return ("an output lateral loop gain >= 1, docs/algorithm.md §7.15; a higher output threshold or a weaker "
                "model.lateral_inhibition avoids it")
    return "an overflow in the backward pass"


def report_epoch_updates(cfg: Any, model: torch.nn.Module, epoch: int, skipped: int, steps: int,
                         main: bool = True) -> None:
    """Warn about skipped updates and diverging weights; raise when the epoch trained nothing."""
    if steps > 0 and skipped >= steps:
        raise NumericalError(
            f"epoch {epoch + 1}: all {steps} update(s) were skipped (non-finite gradients: {skip_cause(cfg, model)}); "
            "the run learns nothing"
        )
    name, top = _largest(model)
    if not top < float("inf"):
        raise NumericalError(f"epoch {epoch + 1}: the weights of {name} are no longer finite "
                             f"(train.lr = {cfg.train.lr:g})")
    if skipped and main:
        print(f"warning: epoch {epoch + 1}: skipped {skipped} of {steps} update(s) with non-finite gradients "
              f"({skip_cause(cfg, model)})", file=sys.stderr)
    init = max(cfg.model.fc_init, cfg.model.conv_init)
    if top > DIVERGED * init and main:
        warnings.warn(f"epoch {epoch + 1}: the weights diverge: max |w| = {top:.3g} in {name}, {top / init:.2g} "
                      f"times the initial bound; train.lr = {cfg.train.lr:g} is too large", DivergenceWarning,
                      stacklevel=2)
