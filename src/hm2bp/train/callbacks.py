"""What a training run does besides training, as hooks on :class:`hm2bp.train.loop.Trainer` (minGPT-style).

The trainer calls, in this order: ``on_train_start``; per epoch ``on_epoch_start``, ``on_step_end`` after
every update, ``on_pass_end`` after the training pass, ``on_epoch_end`` after the evaluation;
``on_checkpoint`` for a mid-epoch checkpoint (periodic or on a signal); ``on_train_end`` when all epochs are
done; ``on_close`` always, last (also after an error or an interrupt). Every hook gets the trainer.

Here: :class:`ProgressBar` (tqdm bar or log lines per epoch), :class:`ConsoleLog` (start, time estimate,
one line per epoch), :class:`Checkpointer` (``last.pt``/``best.pt`` at epoch ends, mid-epoch ``last.pt``
every N updates or M minutes), :class:`MetricsWriter` (``metrics.jsonl``, TensorBoard) and
:class:`Plotter` (PNG plots at the end).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..progress import Progress, format_duration
from .checkpoint import save_checkpoint, save_run_checkpoints
from .state import EpochProgress

if TYPE_CHECKING:
    from .loop import Trainer
    from .metrics import MetricsLog

__all__ = ["Callback", "Checkpointer", "ConsoleLog", "MetricsWriter", "Plotter", "ProgressBar", "plural"]


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Callback:
    """No-op hooks; subclasses override what they need."""

    def on_train_start(self, tr: Trainer) -> None: ...
    def on_epoch_start(self, tr: Trainer, ep: EpochProgress) -> None: ...
    def on_step_end(self, tr: Trainer, ep: EpochProgress) -> None: ...
    def on_pass_end(self, tr: Trainer, ep: EpochProgress) -> None: ...
    def on_epoch_end(self, tr: Trainer, record: dict[str, Any], improved: bool) -> None: ...
    def on_checkpoint(self, tr: Trainer, ck: dict[str, Any], reason: str) -> None: ...
    def on_train_end(self, tr: Trainer) -> None: ...
    def on_close(self, tr: Trainer) -> None: ...


class ProgressBar(Callback):
    """The training pass of each epoch as a :class:`~hm2bp.progress.Progress` (samples, loss, accuracy)."""

    def __init__(self) -> None:
        self.bar: Progress | None = None

    def on_epoch_start(self, tr: Trainer, ep: EpochProgress) -> None:
        done = min(ep.batch * tr.t.batch_size, tr.n_train)
        self.bar = Progress(tr.n_train, f"epoch {ep.epoch + 1}/{tr.t.epochs}", initial=done)

    def on_step_end(self, tr: Trainer, ep: EpochProgress) -> None:
        if self.bar is not None and ep.seen:
            self.bar.update(tr.last_batch_global, loss=f"{ep.loss_sum / ep.seen:.2f}",
                            acc=f"{ep.correct / ep.seen:.3f}")

    def on_pass_end(self, tr: Trainer, ep: EpochProgress) -> None:
        self.on_close(tr)

    def on_close(self, tr: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ConsoleLog(Callback):
    """Lines for the user: where a resumed run continues, the estimated time, one line per epoch."""

    def __init__(self, say: Callable[[str], None], *, warmup_s: float = 2.0, warmup_steps: int = 3) -> None:
        self.say = say
        self.warmup_s, self.warmup_steps = warmup_s, warmup_steps
        self._t0: float | None = None
        self._steps = 0
        self._estimated = False
        self._epoch_times: list[float] = []

    def on_train_start(self, tr: Trainer) -> None:
        st = tr.st
        if tr.resumed_from is not None:
            where = (f"epoch {st.progress.epoch + 1}, update {st.progress.batch} of {tr.n_batches}"
                     if st.progress is not None else f"the end of epoch {st.epoch}")
            self.say(f"resuming {tr.cfg.name} from {tr.resumed_from} at {where} (step {st.step})")

    def on_epoch_start(self, tr: Trainer, ep: EpochProgress) -> None:
        self._t0, self._steps = None, 0

    def on_step_end(self, tr: Trainer, ep: EpochProgress) -> None:
        if self._estimated:
            return
        now = time.perf_counter()
        if self._t0 is None:  # the first update pays one-off costs (kernel builds, caches): not measured
            self._t0 = now
            return
        self._steps += 1
        if (self._steps >= self.warmup_steps and now - self._t0 >= self.warmup_s) or ep.batch >= tr.n_batches:
            self._estimated = True
            self.say(self._estimate(tr, ep, (now - self._t0) / self._steps))

    def _estimate(self, tr: Trainer, ep: EpochProgress, per_step: float) -> str:
        eval_s = tr.estimate_eval_seconds()
        epoch_s = per_step * tr.n_batches + eval_s
        left = per_step * (tr.n_batches - ep.batch) + eval_s + epoch_s * (tr.t.epochs - ep.epoch - 1)
        return (f"estimated time: {format_duration(epoch_s)} per epoch ({format_duration(per_step * tr.n_batches)} "
                f"training, {format_duration(eval_s)} evaluation), {format_duration(left)} for the "
                f"{plural(tr.t.epochs - ep.epoch, 'epoch')} to go (measured on {self._steps} updates)")

    def on_epoch_end(self, tr: Trainer, record: dict[str, Any], improved: bool) -> None:
        self._epoch_times.append(float(record["epoch_time_s"]))
        left = tr.t.epochs - record["epoch"]
        eta = f", ~{format_duration(left * sum(self._epoch_times) / len(self._epoch_times))} left" if left else ""
        self.say(tr.epoch_line(record) + eta)


class Checkpointer(Callback):
    """``last.pt`` (+ ``best.pt`` when the epoch improved) at each epoch end; a mid-epoch ``last.pt`` every
    ``every_steps`` updates or ``every_minutes`` minutes (requested here, written in ``on_checkpoint`` at the
    update every process agreed on). Only the main process writes."""

    def __init__(self, last_path: Path, best_path: Path, *, every_steps: int, every_minutes: float,
                 write: bool) -> None:
        self.last_path, self.best_path = last_path, best_path
        self.every_steps, self.every_s = every_steps, 60.0 * every_minutes
        self.write = write
        self._since = time.monotonic()
        self.saved: str | None = None  # what the newest checkpoint on disk holds, for messages

    def on_step_end(self, tr: Trainer, ep: EpochProgress) -> None:
        if ep.batch >= tr.n_batches:
            return  # the epoch-end checkpoint follows
        if (self.every_steps and ep.batch % self.every_steps == 0) or \
                (self.every_s and time.monotonic() - self._since >= self.every_s):
            tr.request_checkpoint()

    def on_checkpoint(self, tr: Trainer, ck: dict[str, Any], reason: str) -> None:
        if self.write:
            save_checkpoint(ck, self.last_path)
        self._since = time.monotonic()
        p = ck["progress"]
        self.saved = (f"{self.last_path} holds epoch {p['epoch'] + 1} after update {p['batch']} of "
                      f"{tr.n_batches} (step {ck['step']})")

    def on_epoch_end(self, tr: Trainer, record: dict[str, Any], improved: bool) -> None:
        if self.write:
            save_run_checkpoints(tr.checkpoint(), self.last_path, self.best_path if improved else None)
        self._since = time.monotonic()
        self.saved = f"{self.last_path} holds the end of epoch {record['epoch']} (step {record['step']})"


class MetricsWriter(Callback):
    """One ``metrics.jsonl`` line (and TensorBoard scalars) per epoch, after that epoch's checkpoint."""

    def __init__(self, log: MetricsLog) -> None:
        self.log = log

    def on_epoch_end(self, tr: Trainer, record: dict[str, Any], improved: bool) -> None:
        self.log.log(record)

    def on_close(self, tr: Trainer) -> None:
        self.log.close()


class Plotter(Callback):
    """The PNG plots of :mod:`hm2bp.train.plots` when training is done (never fails the run)."""

    def __init__(self, out_dir: Path, say: Callable[[str], None]) -> None:
        self.out_dir, self.say = out_dir, say

    def on_train_end(self, tr: Trainer) -> None:
        from .plots import have_matplotlib, plot_all

        if not have_matplotlib() or tr.last_eval is None:
            return
        try:
            paths = plot_all(tr.model, tr.test_set, self.out_dir, metrics=tr.st.metrics, eval_result=tr.last_eval,
                             device=tr.device)
        except Exception as e:  # a plot must never lose a finished training run
            print(f"warning: plotting failed ({type(e).__name__}: {e})", file=sys.stderr)
        else:
            self.say(f"plots: {', '.join(p.name for p in paths)} in {self.out_dir}")
