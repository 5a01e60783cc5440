"""Per-epoch metrics: a JSON-lines log (``metrics.jsonl``) and an optional TensorBoard writer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "read_metrics"]

_TB_KEYS = ("lr", "train_loss", "train_acc", "test_acc", "best_test_acc", "mean_output_count", "boost_max")


class MetricsLog:
    """Appends one JSON object per epoch to ``<out>/metrics.jsonl``; mirrors scalars to TensorBoard.

    Keys of a record: ``epoch`` (0-based), ``lr``, ``train_loss``, ``train_acc``, ``test_acc``,
    ``best_test_acc``, ``epoch_time_s``, ``wall_time_s`` (since the start of the run, resumes included),
    ``step``, ``mean_output_count``, ``boost_mean``, ``boost_max``, ``skipped_steps`` (updates skipped
    because of non-finite gradients). Accuracies are fractions in [0, 1]. ``train_loss`` is the mean
    per-sample data loss of the training pass without boost weights or regulariser (rate loss:
    Σ_i ½(o_i − y_i)² outside the dead zone, i.e. half the authors' logged cost; softmax: cross-entropy).
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, tensorboard: bool = False, fresh: bool = True,
                 keep: list[dict[str, Any]] | None = None) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or keep is not None:
            # a fresh run starts an empty log; a resumed run rewrites the log from the checkpoint's records,
            # so epochs logged after the checkpoint (by the interrupted run) do not appear twice
            with open(self.path, "w", encoding="utf-8") as f:
                for rec in keep or []:
                    f.write(json.dumps(rec) + "\n")
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # tensorboard not installed (or broken): skip silently
                self._tb = None
            else:
                self._tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self._tb is not None:
            for k in _TB_KEYS:
                if isinstance(record.get(k), (int, float)):
                    self._tb.add_scalar(k, record[k], record["epoch"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` (a file, or a run folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    with open(p, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
