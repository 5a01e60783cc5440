"""Model selection on the validation split, early stopping, and the run's closing summary line.

``best.pt`` holds the epoch with the highest validation accuracy (the first of equals); a run without a
validation split falls back to the test accuracy (the authors' procedure, docs/algorithm.md §4.5) and says so. Early
stopping (``train.early_stop_patience``) watches the validation accuracy only. Epochs are counted from 1
(the ``epoch`` of a ``metrics.jsonl`` record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loop import TrainResult

__all__ = ["early_stop_due", "fill_selection", "selected", "selected_fields", "summary_line"]


def selected(metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record of the epoch in ``best.pt``: the first with the highest validation accuracy (test
    accuracy for a run without a validation split)."""
    if not metrics:
        return None
    key = "val_acc" if metrics[-1].get("val_acc") is not None else "test_acc"
    best = metrics[0]
    for m in metrics[1:]:
        if m[key] > best[key]:
            best = m
    return best


def selected_fields(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    sel = selected(metrics)
    assert sel is not None
    on_val = sel.get("val_acc") is not None
    return {"selected_on": "val" if on_val else "test", "selected_epoch": sel["epoch"],
            "best_val_acc": sel["val_acc"] if on_val else None, "selected_test_acc": sel["test_acc"]}


def early_stop_due(metrics: list[dict[str, Any]], patience: int) -> bool:
    """True when ``patience`` > 0 epochs have passed since the selected (best validation) epoch."""
    sel = selected(metrics)
    if not patience or sel is None or sel.get("val_acc") is None:
        return False
    return int(metrics[-1]["epoch"]) - int(sel["epoch"]) >= patience


def fill_selection(result: TrainResult) -> None:
    sel = selected(result.metrics)
    if sel is None:
        return
    result.val_acc = result.metrics[-1].get("val_acc")
    result.selected_on = "val" if sel.get("val_acc") is not None else "test"
    result.selected_epoch = int(sel["epoch"])
    result.selected_test_acc = float(sel["test_acc"])
    result.selected_val_acc = sel.get("val_acc")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def summary_line(result: TrainResult) -> str:
    """One line: test accuracy of the checkpoint chosen on validation (``best.pt``) and of the last epoch."""
    if result.selected_epoch < 0:
        return "summary: no epoch trained"
    last = result.metrics[-1]
    if result.selected_on == "val":
        chosen = (f"best.pt = epoch {result.selected_epoch} chosen on validation (val "
                  f"{_pct(result.selected_val_acc)}): test {_pct(result.selected_test_acc)}")
    else:
        chosen = (f"best.pt = epoch {result.selected_epoch} chosen on the TEST set (no validation split; "
                  f"set data.n_val): test {_pct(result.selected_test_acc)}")
    val_last = "" if last.get("val_acc") is None else f"val {_pct(last['val_acc'])}, "
    stop = ", stopped early" if result.stopped_early else ""
    return f"summary: {chosen}; last epoch {int(last['epoch'])}: {val_last}test {_pct(last['test_acc'])}{stop}"
