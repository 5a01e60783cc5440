"""The training loop: online (exact reproduction) and mini-batch HM2-BP training, in small named steps.

One update (docs/algorithm.md §3.7, §4), :meth:`Trainer.train_step`:

1. input spikes of the batch → network forward (labels passed, so the output layer's backward can apply
   spike insertion and the lateral factor);
2. loss on the output counts (rate loss with the boost weights β_n, or softmax), mean over the batch,
   plus the weight regulariser (docs/algorithm.md §4.1) when λ > 0;
3. ``loss.backward()`` runs the HM2-BP rule inside the layers; one optimizer step.

Online mode is batch 1 with Adam and the authors' lr schedule, boosting and 5000-swap shuffling: the
procedure of the reference code. Mini-batch mode averages the per-sample rules over a batch.

:meth:`Trainer.fit` is the whole run: :meth:`~Trainer.restore` (from a checkpoint, possibly mid-epoch),
then per epoch :meth:`~Trainer.begin_epoch` (learning rate, data order), :meth:`~Trainer.run_epoch` (the
updates) and :meth:`~Trainer.end_epoch` (boost weights from the predictions of the training pass, spec
§4.4; evaluation of the validation set, if any, and of the whole test set; the epoch's record).
``best.pt`` is chosen on the validation accuracy, on the test accuracy only without a validation split
(:mod:`hm2bp.train.selection`); ``train.early_stop_patience`` stops on validation. Everything else hangs on hooks
(:mod:`hm2bp.train.callbacks`): progress, console lines and the time estimate, checkpoints (``last.pt``
and ``best.pt`` atomically at each epoch end, a mid-epoch ``last.pt`` every N updates / M minutes and on
Ctrl-C or SIGTERM), ``metrics.jsonl`` and plots.

Under ``torchrun`` (``WORLD_SIZE > 1``, mini-batch mode) each process runs its share of every mini-batch
and of the test set; gradients, predictions and metrics are reduced across processes and rank 0 alone
writes files (:mod:`hm2bp.train.distributed`, ``docs/distributed.md``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import RunConfig, write_config_json
from ..errors import ConfigError, NumericalError
from ..loss import weight_regularizer
from ..nn.memory import check_training_fits
from ..nn.network import SpikingNetwork
from . import distributed as D
from .boosting import update_boost_weights
from .callbacks import Callback, Checkpointer, ConsoleLog, MetricsWriter, Plotter, ProgressBar
from .checkpoint import load_checkpoint, repair_best
from .datasets import SpikeDataset
from .evaluate import EvalInterrupted, EvalResult, evaluate, evaluate_all, evaluate_checkpoint, model_from_checkpoint
from .input_checks import check_layers_fire
from .interrupt import InterruptGuard, TrainingInterrupted
from .metrics import MetricsLog
from .objective import authors_cost as _authors_cost
from .objective import data_loss as _data_loss
from .objective import grads_finite as _grads_finite  # also used by benchmarks/harness.py
from .objective import make_optimizer as _make_optimizer
from .preflight import preflight, warn_if_threads_changed
from .rundir import RunLock, check_run_folder
from .runtime import build_model, num_threads, resolve_device
from .schedule import lr_at_epoch, lr_at_step, per_step_schedule, shuffle_order
from .selection import early_stop_due, fill_selection, selected_fields, summary_line
from .state import (
    EpochProgress,
    TrainState,
    check_resumable,
    fresh_state,
    init_weights_from,
    make_checkpoint,
    restore_state,
)
from .update_checks import report_epoch_updates
from .user_datasets import resolve_datasets

__all__ = [
    "EvalResult",
    "TrainResult",
    "Trainer",
    "build_model",
    "evaluate",
    "evaluate_checkpoint",
    "model_from_checkpoint",
    "num_threads",
    "resolve_device",
    "train",
]


@dataclass
class TrainResult:
    """What :func:`train` returns: the per-epoch records, final and best test accuracy, the run folder.

    ``selected_*`` describe the epoch whose weights are in ``best.pt`` (counted from 1): chosen on
    ``selected_on`` ("val", or "test" for a run without a validation split); ``best_test_acc`` is the
    maximum test accuracy over the epochs (reported, not used for selection when there is a validation split).
    """

    metrics: list[dict[str, Any]]
    test_acc: float
    best_test_acc: float
    out_dir: Path
    model: SpikingNetwork
    last_eval: EvalResult | None = field(default=None, repr=False)
    val_acc: float | None = None
    selected_on: str = "test"
    selected_epoch: int = -1
    selected_test_acc: float = float("nan")
    selected_val_acc: float | None = None
    stopped_early: bool = False


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------
class Trainer:
    """One training run on one process: the model, optimizer, datasets, state, and the hooks it calls."""

    def __init__(self, cfg: RunConfig, device: torch.device, train_set: SpikeDataset, test_set: SpikeDataset, *,
                 val_set: SpikeDataset | None = None, ctx: D.DistContext | None = None,
                 callbacks: list[Callback] | None = None, guard: InterruptGuard | None = None) -> None:
        self.cfg, self.t = cfg, cfg.train
        self.device, self.ctx = device, ctx
        self.main = ctx is None or ctx.is_main
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.stopped_early = False
        self.model = build_model(cfg).to(device)
        if self.t.init_from:  # before the checks below, which look at the weights the run starts from
            init_weights_from(self.model, Path(self.t.init_from), cfg)
        # refuse up front, with the estimate and a remedy, a step that cannot fit (instead of an OOM mid-epoch)
        check_training_fits(self.model, cfg.model.T, self.t.batch_size, device)
        check_layers_fire(self.model, train_set, cfg.model.thresholds, device)  # a silent hidden layer warns
        self.opt = _make_optimizer(cfg, self.model)
        self.params = [p for group in self.opt.param_groups for p in group["params"]]
        self.n_train = len(train_set)
        n_batches = -(-self.n_train // self.t.batch_size)
        self.n_batches = min(n_batches, self.t.max_steps) if self.t.max_steps else n_batches
        self.st: TrainState = fresh_state(self.n_train, self.t.seed)
        self.callbacks = callbacks or []
        self.guard = guard
        self.use_reg = self.t.reg_lambda > 0 and self.t.reg_beta >= 0
        self.last_eval: EvalResult | None = None
        self.last_batch_global = 0
        self.resumed_from: Path | None = None
        self._checkpoint_requested = False
        self.show_progress = True  # evaluation progress (the training pass has its own hook)
        self._t_start = time.perf_counter()
        self._t_epoch = self._t_start
        self._train_time = 0.0

    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # -- restore ----------------------------------------------------------------------------------
    def restore(self, ck: dict[str, Any], path: Path) -> None:
        """Continue from checkpoint ``ck`` (read from ``path``): weights, optimizer, order, RNG, progress."""
        restore_state(ck, path, self.model, self.opt, self.st)
        self.resumed_from = path
        if self.ctx is not None and self.st.progress is not None:
            self._restore_rank_sums(ck["progress"])

    def _restore_rank_sums(self, prog: dict[str, Any]) -> None:
        """A distributed mid-epoch checkpoint stores every process's running sums: take this process's row
        (with another number of processes, rank 0 takes the totals)."""
        assert self.ctx is not None and self.st.progress is not None
        rows = prog.get("rank_sums")
        ep = self.st.progress
        if rows is None:
            return
        rows = torch.as_tensor(rows, dtype=torch.float64)
        row = rows[self.ctx.rank] if rows.shape[0] == self.ctx.world_size else \
            (rows.sum(0) if self.ctx.is_main else torch.zeros(rows.shape[1], dtype=torch.float64))
        ep.loss_sum, ep.cost_sum, ep.count_sum = float(row[0]), float(row[1]), float(row[2])
        ep.seen, ep.correct, ep.skipped = int(row[3]), int(row[4]), int(row[5])

    # -- the run ----------------------------------------------------------------------------------
    def fit(self) -> None:
        """All remaining epochs; then evaluation (if nothing was left to train) and ``on_train_end``."""
        self._t_start = time.perf_counter()
        try:
            self._emit("on_train_start")
            for epoch in range(self.st.epoch, self.t.epochs):
                if early_stop_due(self.st.metrics, self.t.early_stop_patience):  # also right after a resume
                    self.stopped_early = True
                    break
                ep = self.begin_epoch(epoch)
                self.run_epoch(ep)
                self._emit("on_pass_end", ep)
                self.end_epoch(ep)
            if self.last_eval is None:  # resumed a finished run: evaluate once so the result is complete
                self.last_eval = self._evaluate(self.test_set, max(self.st.epoch - 1, 0), "test evaluation")
            self._emit("on_train_end")
        finally:
            self._emit("on_close")

    def begin_epoch(self, epoch: int) -> EpochProgress:
        """The learning rate and data order of ``epoch`` (kept when resuming inside it)."""
        if self._per_step:
            self._set_lr(epoch, 0)
        else:
            self._set_lr_value(lr_at_epoch(self.t.lr, epoch, self.t.lr_schedule))
        st = self.st
        if st.progress is None:
            st.order = shuffle_order(st.order, self.t.shuffle, st.shuffle_gen, self.t.n_swaps)
            st.progress = EpochProgress(epoch, preds=torch.full((self.n_train,), -1, dtype=torch.int64))
        self._t_epoch = time.perf_counter() - st.progress.elapsed
        self._emit("on_epoch_start", st.progress)
        return st.progress

    @property
    def _per_step(self) -> bool:
        return per_step_schedule(self.t.lr_schedule, self.t.warmup_steps)

    def _set_lr_value(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def _set_lr(self, epoch: int, batch: int) -> None:
        """The per-update rate (cosine, warm-up) of batch ``batch`` of ``epoch``: a function of the global
        update index, so that a run resumed mid-epoch gets the same rates."""
        n = self.n_batches
        self._set_lr_value(lr_at_step(self.t.lr, epoch, epoch * n + batch, self.t.epochs * n, self.t.lr_schedule,
                                      self.t.warmup_steps))

    def run_epoch(self, ep: EpochProgress) -> None:
        """The updates of the epoch's training pass from batch ``ep.batch`` on; hooks after every update."""
        bs = self.t.batch_size
        while ep.batch < self.n_batches:
            self.train_step(ep, self.st.order[ep.batch * bs : (ep.batch + 1) * bs])
            ep.batch += 1
            self._emit("on_step_end", ep)
            self._after_step(ep)

    def train_step(self, ep: EpochProgress, idx: Tensor) -> None:
        """One update on the samples ``idx`` of the global batch (this process's shard of it)."""
        cfg, t, ctx, device, model = self.cfg, self.t, self.ctx, self.device, self.model
        b_global = int(idx.numel())
        if ctx is not None:
            idx = D.shard(idx, ctx)
        b = int(idx.numel())
        if self._per_step:
            self._set_lr(ep.epoch, ep.batch)
        self.opt.zero_grad(set_to_none=True)
        if b:
            x = self.train_set.get(idx, ep.epoch).to(device)  # bool: each layer converts what it needs
            labels = self.train_set.labels[idx].to(device)
            weights = self.st.boost[idx].to(device, torch.float32) if t.boosting else None
            counts = model(x, labels).sum(0)
            if ctx is None:
                loss = _data_loss(cfg, counts, labels, weights)
            else:  # this shard's part of the global batch mean: Σ_shard L_n / B
                loss = _data_loss(cfg, counts, labels, weights, reduction="sum") / b_global
            total = loss
        if self.use_reg and self.main:  # added once (rank 0) in a distributed run
            reg = weight_regularizer(model, t.reg_lambda, t.reg_beta, t.reg_limit).to(device)
            total = total + reg if b else reg
        if b or (self.use_reg and self.main):
            total.backward()
        if ctx is not None:
            D.all_reduce_gradients(self.params, ctx)
        if _grads_finite(self.opt):
            self.opt.step()
        else:  # e.g. an output lateral loop gain >= 1 (docs/algorithm.md §7.15): skip this update, keep training
            ep.skipped += 1
        self.st.step += 1
        self.last_batch_global = b_global
        if b:
            self._tally(ep, idx, counts, labels, loss, weights, int(x.shape[0]))

    def _tally(self, ep: EpochProgress, idx: Tensor, counts: Tensor, labels: Tensor, loss: Tensor,
               weights: Tensor | None, steps: int) -> None:
        """The update's share of the epoch's loss, cost, accuracy, output counts and predictions."""
        with torch.no_grad():
            c = counts.detach()
            plain = (_data_loss(self.cfg, c, labels, None) if (weights is not None or self.ctx is not None)
                     else loss.detach())
            logged = _authors_cost(self.cfg, c, labels, plain, steps)
            p = c.argmax(1).cpu()
        b = int(idx.numel())
        ep.preds[idx] = p
        ep.loss_sum += float(plain) * b
        ep.cost_sum += float(logged) * b
        ep.seen += b
        ep.correct += int((p == labels.cpu()).sum())
        ep.count_sum += float(c.sum())

    # -- mid-epoch checkpoints and interrupts -------------------------------------------------------
    def request_checkpoint(self) -> None:
        """Ask for a mid-epoch checkpoint after the current update (a hook calls this)."""
        self._checkpoint_requested = True

    def _stop_requested(self) -> bool:
        return self.guard is not None and self.guard.requested

    def _after_step(self, ep: EpochProgress) -> None:
        save, stop = D.any_flags([self._checkpoint_requested, self._stop_requested()], self.ctx)
        self._checkpoint_requested = False
        if save or stop:
            self._emit("on_checkpoint", self.checkpoint(ep), "interrupt" if stop else "periodic")
        if stop:
            raise self._interrupted()

    def _interrupted(self) -> TrainingInterrupted:
        ck = next((cb for cb in self.callbacks if isinstance(cb, Checkpointer)), None)
        saved = ck.saved if ck is not None and ck.saved else "no checkpoint was written"
        signum = self.guard.signum if self.guard is not None and self.guard.signum is not None else 2
        return TrainingInterrupted(f"interrupted; {saved}; continue with --resume", signum)

    def checkpoint(self, ep: EpochProgress | None = None) -> dict[str, Any]:
        """The checkpoint of the current state; ``ep``: mid-epoch, with the position and running sums."""
        st = self.st
        saved_progress = st.progress
        st.progress = ep
        if ep is not None:
            ep.elapsed = time.perf_counter() - self._t_epoch
        try:
            ck = make_checkpoint(self.cfg, self.model, self.opt, st)
        finally:
            st.progress = saved_progress
        if ep is not None and self.ctx is not None:  # every process's sums, and all predictions so far
            ck["progress"]["rank_sums"] = D.gather_rows(
                [ep.loss_sum, ep.cost_sum, ep.count_sum, ep.seen, ep.correct, ep.skipped], self.ctx)
            ck["progress"]["preds"] = D.merge_predictions(ep.preds, self.ctx)
        return ck

    # -- end of epoch -------------------------------------------------------------------------------
    def end_epoch(self, ep: EpochProgress) -> None:
        """Boost weights, evaluation and the epoch's record; then ``on_epoch_end`` (checkpoints, log, line)."""
        ctx, st = self.ctx, self.st
        loss_sum, seen, correct, count_sum, cost_sum, preds = (ep.loss_sum, ep.seen, ep.correct, ep.count_sum,
                                                               ep.cost_sum, ep.preds)
        if ctx is not None:  # the epoch's numbers over all processes; every process's predictions
            loss_sum, seen_f, correct_f, count_sum, cost_sum = D.all_reduce_sum(
                [loss_sum, seen, correct, count_sum, cost_sum], ctx)
            seen, correct = int(seen_f), int(correct_f)
            preds = D.merge_predictions(preds, ctx)
        if not math.isfinite(loss_sum):
            raise NumericalError(f"epoch {ep.epoch + 1}: the training loss is not finite")
        # names the cause of skipped updates; an epoch whose every update was skipped is an error
        report_epoch_updates(self.cfg, self.model, ep.epoch, ep.skipped, ep.batch, self.main)
        boost = self._boosted(preds)
        self._train_time = time.perf_counter() - self._t_epoch  # the training pass, without evaluation
        try:
            val_eval = (None if self.val_set is None
                        else self._evaluate(self.val_set, ep.epoch, "validation"))
            self.last_eval = self._evaluate(self.test_set, ep.epoch, "test evaluation")
        except EvalInterrupted:  # saved as "training pass done": the resumed run redoes boost and evaluation
            self._emit("on_checkpoint", self.checkpoint(ep), "interrupt")
            raise self._interrupted() from None
        st.boost = boost
        score = self.last_eval.accuracy if val_eval is None else val_eval.accuracy
        improved = score > st.best  # st.best: the selection accuracy (validation, else test)
        st.best = max(st.best, score)
        st.epoch, st.progress = ep.epoch + 1, None
        if improved:
            st.best_step = st.step
        record = self._record(ep, loss_sum, cost_sum, count_sum, seen, correct, val_eval)
        st.metrics.append(record)
        record.update(selected_fields(st.metrics))
        self._emit("on_epoch_end", record, improved)

    def _boosted(self, preds: Tensor) -> Tensor:
        """The boost weights after this epoch (docs/algorithm.md §4.4), from the predictions of its training pass."""
        boost = self.st.boost.clone()
        if self.t.boosting:
            mask = preds >= 0
            boost[mask] = update_boost_weights(boost[mask], self.train_set.labels[mask], preds[mask],
                                               self.train_set.n_classes)
        return boost

    def _evaluate(self, dataset: SpikeDataset, epoch: int, desc: str) -> EvalResult:
        stop = self._stop_requested if self.ctx is None else None
        return _evaluate_all(self.model, dataset, self.ctx, self.t.eval_batch_size, self.device, epoch,
                             show_progress=self.main and self.show_progress, desc=desc, should_stop=stop)

    def _record(self, ep: EpochProgress, loss_sum: float, cost_sum: float, count_sum: float, seen: int,
                correct: int, val_eval: EvalResult | None) -> dict[str, Any]:
        assert self.last_eval is not None
        now = time.perf_counter()
        st = self.st
        return {
            "epoch": ep.epoch + 1,  # counted from 1, as on the console
            "lr": self.opt.param_groups[0]["lr"],
            "train_loss": loss_sum / max(seen, 1),
            "train_cost_as_logged": cost_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_acc": None if val_eval is None else val_eval.accuracy,
            "test_acc": self.last_eval.accuracy,
            "best_test_acc": max([self.last_eval.accuracy] + [m["test_acc"] for m in st.metrics]),
            "epoch_time_s": now - self._t_epoch,
            "train_time_s": self._train_time,
            "wall_time_s": st.wall_offset + now - self._t_start,
            "step": st.step,
            "mean_output_count": count_sum / max(seen * self.train_set.n_classes, 1),
            "boost_mean": float(st.boost.mean()),
            "boost_max": float(st.boost.max()),
            "skipped_steps": ep.skipped,
        }

    def epoch_line(self, record: dict[str, Any]) -> str:
        val = record.get("val_acc")
        val_txt = "" if val is None else f"val {100 * val:.2f}%  "
        return (f"epoch {record['epoch']}/{self.t.epochs}  lr {record['lr']:.3g}  loss {record['train_loss']:.3f}  "
                f"train {100 * record['train_acc']:.2f}%  {val_txt}test {100 * record['test_acc']:.2f}%  "
                f"(best {'val' if val is not None else 'test'} {100 * self.st.best:.2f}%)  "
                f"{record['epoch_time_s']:.1f}s")

    def estimate_eval_seconds(self, n: int = 16) -> float:
        """Seconds one end-of-epoch evaluation (validation and test sets) takes, from a timed forward of ``n``
        test samples."""
        k = min(n, len(self.test_set))
        if not k:
            return 0.0
        t0 = time.perf_counter()
        evaluate(self.model, self.test_set, batch_size=k, device=self.device, n=k)
        per_sample = (time.perf_counter() - t0) / k
        world = 1 if self.ctx is None else self.ctx.world_size
        n_eval = len(self.test_set) + (len(self.val_set) if self.val_set is not None else 0)
        return per_sample * n_eval / world


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def train(
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    echo: Callable[[str], None] | None = print,
    datasets: Any = None,
) -> TrainResult:
    """Train a network as configured; returns the metrics and the final/best test accuracy.

    Args:
        cfg: the run configuration.
        resume: continue from ``<checkpoint_dir>/last.pt`` (an epoch end or a mid-epoch checkpoint); the
            result equals an uninterrupted run. Without a ``last.pt`` the run starts fresh (and says so)
            unless the folder holds an earlier run's files.
        overwrite: replace an earlier run in the run folder; without it (and without ``resume``) a folder
            holding checkpoints or logged epochs is refused (:class:`~hm2bp.train.rundir.RunFolderError`).
        quiet: no progress and no per-epoch lines.
        echo: where per-epoch summary lines go (None = nowhere).
        datasets: your own data instead of ``cfg.data``'s: ``(train, test)``, ``(train, test, val)`` or a
            dict with those keys; each a SpikeDataset or any map-style dataset of ``(spikes [T, inputs],
            label)`` items (:mod:`hm2bp.train.user_datasets`), checked against ``cfg.model``.

    Raises:
        TrainingInterrupted: on SIGINT/SIGTERM, after writing a mid-epoch ``last.pt``; the message says
            what was saved.

    Started by ``torchrun`` with ``WORLD_SIZE > 1`` (or inside an initialised process group), it trains
    data-parallel (:mod:`hm2bp.train.distributed`); every process returns the same result.
    """
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the folder and --overwrite replaces it: pass one of them")
    t = cfg.train
    with D.session(t.device, t.mode, t.batch_size) as (ctx, device), num_threads(t.threads):
        main = ctx is None or ctx.is_main
        preflight(cfg, device)  # run folders usable, weights and an eval batch fit: before data and model
        lock = RunLock(cfg.out_dir) if main else None
        locks = [lock] if lock is not None else []
        if main and cfg.checkpoint_dir.resolve() != cfg.out_dir.resolve():
            locks.append(RunLock(cfg.checkpoint_dir))
        for lk in locks:
            lk.acquire()
        try:
            return _train(cfg, device, resume=resume, overwrite=overwrite, quiet=quiet or not main, echo=echo,
                          datasets=datasets,
                          ctx=ctx)
        finally:
            for lk in reversed(locks):
                lk.release()


def _train(cfg: RunConfig, device: torch.device, *, resume: bool, overwrite: bool, quiet: bool,
           echo: Callable[[str], None] | None, ctx: D.DistContext | None = None, datasets: Any = None
           ) -> TrainResult:
    main = ctx is None or ctx.is_main
    say: Callable[[str], None] = (lambda s: None) if (quiet or echo is None) else echo
    out_dir, ck_dir = cfg.out_dir, cfg.checkpoint_dir
    last_path, best_path = ck_dir / "last.pt", ck_dir / "best.pt"
    ck = _open_run_folder(cfg, resume=resume, overwrite=overwrite, main=main, ctx=ctx, say=say)
    train_set, val_set, test_set = resolve_datasets(cfg, datasets)
    with InterruptGuard(announce=main) as guard:
        callbacks: list[Callback] = [Checkpointer(last_path, best_path, every_steps=cfg.train.checkpoint_every_steps,
                                                  every_minutes=cfg.train.checkpoint_every_minutes, write=main)]
        tr = Trainer(cfg, device, train_set, test_set, val_set=val_set, ctx=ctx, callbacks=callbacks, guard=guard)
        tr.show_progress = not quiet
        if ck is not None:
            tr.restore(ck, last_path)
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_config_json(cfg, out_dir / "config.json")
            log = MetricsLog(out_dir, tensorboard=cfg.train.tensorboard, fresh=ck is None,
                             keep=tr.st.metrics if ck is not None else None)
            callbacks.append(MetricsWriter(log))
            if not quiet:
                callbacks[:0] = [ProgressBar()]
                callbacks.append(ConsoleLog(say))
            if cfg.train.plots:
                callbacks.append(Plotter(out_dir, say))
        D.barrier(ctx)  # every process has read last.pt before rank 0 may replace it
        try:
            tr.fit()
        except KeyboardInterrupt:  # a second Ctrl-C: stopped without saving
            raise tr._interrupted() from None
        if guard.requested and main:  # the signal came after the last update: the run is complete
            print(f"hm2bp: the signal came after the last update; the run is complete "
                  f"({tr.st.epoch} epochs in {last_path})", file=sys.stderr)
    D.barrier(ctx)  # the files of rank 0 are complete when any process returns
    assert tr.last_eval is not None
    metrics = tr.st.metrics
    result = TrainResult(metrics, tr.last_eval.accuracy, max(m["test_acc"] for m in metrics) if metrics
                         else tr.last_eval.accuracy, out_dir, tr.model, tr.last_eval, stopped_early=tr.stopped_early)
    fill_selection(result)
    say(summary_line(result))
    return result


def _evaluate_all(model: SpikingNetwork, dataset: SpikeDataset, ctx: D.DistContext | None, batch_size: int,
                  device: torch.device, epoch: int, **kw: Any) -> EvalResult:
    """The trainer's evaluation of a whole dataset (one seam, so that tests can script accuracies)."""
    return evaluate_all(model, dataset, ctx, batch_size=batch_size, device=device, epoch=epoch, **kw)


def _open_run_folder(cfg: RunConfig, *, resume: bool, overwrite: bool, main: bool, ctx: D.DistContext | None,
                     say: Callable[[str], None]) -> dict[str, Any] | None:
    """Decide between resuming, a fresh start and refusing (rank 0; the others follow); returns the
    checkpoint to resume from, checked against the config, or None."""
    last_path, best_path = cfg.checkpoint_dir / "last.pt", cfg.checkpoint_dir / "best.pt"
    error: Exception | None = None
    resuming = False
    if main:
        try:
            resuming = check_run_folder(cfg.out_dir, cfg.checkpoint_dir, resume=resume, overwrite=overwrite)
        except Exception as e:
            error = e
    failed, resuming = D.any_flags([error is not None, resuming], ctx)
    if error is not None:
        raise error
    if failed:
        raise ConfigError("rank 0 refused the run folder (see its message)")
    if resume and not resuming:  # e.g. a job script that always passes --resume, killed early
        say(f"--resume: no {last_path} yet; starting a fresh run")
    if not resuming:
        return None
    ck = load_checkpoint(last_path)  # checked before the (possibly slow) data loading
    check_resumable(ck, cfg, last_path)
    warn_if_threads_changed(ck["config"], cfg, last_path)  # allowed, but not bit-exact
    if main and repair_best(ck, last_path, best_path):
        say(f"{best_path} completed from {last_path} (a run stopped between writing the two)")
    return ck
