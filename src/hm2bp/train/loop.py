"""The training loop: online (exact reproduction) and mini-batch HM2-BP training, evaluation, resume.

One update (spec §3.7, §4):

1. input spikes of the batch → network forward (labels passed, so the output layer's backward can apply
   spike insertion and the lateral factor);
2. loss on the output counts (rate loss with the boost weights β_n, or softmax), mean over the batch,
   plus the weight regulariser (spec §4.1) when λ > 0;
3. ``loss.backward()`` runs the HM2-BP rule inside the layers; one optimizer step.

Online mode is batch 1 with Adam and the authors' lr schedule, boosting and 5000-swap shuffling: the
procedure of the reference code. Mini-batch mode averages the per-sample rules over a batch.

After each epoch: boost weights are updated from the predictions recorded during the training pass
(spec §4.4), the validation set (if any, ``data.n_val``) and the whole test set are evaluated, a line goes
to ``metrics.jsonl``, and ``last.pt`` (plus ``best.pt`` when the selection accuracy improves) is written
atomically. The selection accuracy is the validation accuracy; only a run without a validation split
falls back to the test accuracy (the authors' procedure, spec §4.5). Early stopping
(``train.early_stop_patience``) watches the validation accuracy only.

Under ``torchrun`` (``WORLD_SIZE > 1``, mini-batch mode) each process runs its share of every mini-batch
and of the test set; gradients, predictions and metrics are reduced across processes and rank 0 alone
writes files (:mod:`hm2bp.train.distributed`, ``docs/distributed.md``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import RunConfig, config_from_dict, config_to_dict, write_config_json
from ..errors import ConfigError
from ..functional.autograd import all_finite
from ..loss import counts_as_logged, rate_loss, softmax_loss, weight_regularizer
from ..nn.network import SpikingNetwork, build_network
from . import distributed as D
from .boosting import update_boost_weights
from ..nn.memory import check_training_fits
from .checkpoint import FORMAT, VERSION, CheckpointError, load_checkpoint, save_run_checkpoints
from .datasets import SpikeDataset, load_datasets, load_splits, sample_generator
from .preflight import check_checkpoint_matches, preflight, warn_if_threads_changed
from .input_checks import check_layers_fire
from .update_checks import report_epoch_updates
from .metrics import MetricsLog
from .schedule import lr_at_epoch, shuffle_order

__all__ = ["TrainResult", "EvalResult", "train", "evaluate", "evaluate_checkpoint", "build_model", "resolve_device",
           "model_from_checkpoint"]


@dataclass
class EvalResult:
    """Accuracy of a model on a dataset; ``predictions``/``labels`` int64 ``[N]``, ``counts`` ``[N, C]``."""

    accuracy: float
    predictions: Tensor
    labels: Tensor
    counts: Tensor

    @property
    def n(self) -> int:
        return int(self.labels.numel())


@dataclass
class TrainResult:
    """What :func:`train` returns: the per-epoch records, final and best test accuracy, the run folder.

    ``selected_*`` describe the epoch whose weights are in ``best.pt``: chosen on ``selected_on``
    ("val", or "test" for a run without a validation split); ``best_test_acc`` is the maximum test accuracy
    over the epochs (reported, not used for selection when there is a validation split).
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
# Building blocks
# --------------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a CUDA device that is not there is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r}: CUDA is not available in this PyTorch build/machine "
                              f"(torch {torch.__version__}, torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


def build_model(cfg: RunConfig, seed: int | None = None) -> SpikingNetwork:
    """The network of ``cfg.model``, initialised from a generator seeded with ``cfg.train.seed``."""
    m = cfg.model
    gen = sample_generator(cfg.train.seed if seed is None else seed, "init")
    return build_network(
        m.arch, m.thresholds, lateral_inhibition=m.lateral_inhibition or None, effect_ratio=m.effect_ratio,
        desired=m.desired, fc_init=m.fc_init, conv_init=m.conv_init, tau_m=m.tau_m, tau_s=m.tau_s,
        t_ref=m.t_ref, generator=gen,
    )


def _make_optimizer(cfg: RunConfig, model: SpikingNetwork) -> torch.optim.Optimizer:
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adam":
        # fused: one pass over the weights per step (5x faster than the per-op loop on a CPU, where the
        # batch-1 exact mode spends most of its step in the optimizer); same update rule (spec §4.2).
        return torch.optim.Adam(params, lr=t.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum)


def _data_loss(cfg: RunConfig, counts: Tensor, labels: Tensor, weights: Tensor | None,
               reduction: str = "mean") -> Tensor:
    m = cfg.model
    if m.loss == "softmax":
        return softmax_loss(counts, labels, sample_weight=weights, reduction=reduction)
    return rate_loss(counts, labels, desired=m.desired, undesired=m.undesired, margin=m.margin,
                     sample_weight=weights, reduction=reduction)


def _authors_cost(cfg: RunConfig, counts: Tensor, labels: Tensor, plain: Tensor, steps: int) -> Tensor:
    """The per-sample cost the authors' code logs (spec §3.1, §3.6), batch mean: Σ_i [|o_i − y_i| > M]·(o_i − y_i)²
    (no ½, no boost weight), or −log softmax(o)_label, on the counts after spike insertion
    (``counts_as_logged``). ``plain`` is the unweighted data loss of the raw ``counts``: the two differ only
    where a label neuron stayed silent, so the (rare) recomputation is skipped otherwise; it costs ~0.25 ms,
    a tenth of a batch-1 step at short windows."""
    scale = 1.0 if cfg.model.loss == "softmax" else 2.0  # the rate loss carries a ½
    if not bool((counts.gather(1, labels.unsqueeze(1)) == 0).any()):
        return scale * plain
    return scale * _data_loss(cfg, counts_as_logged(counts, labels, steps, int(cfg.model.desired)), labels, None)


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)`` (n = 0: unchanged), restoring the previous count."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _grads_finite(opt: torch.optim.Optimizer) -> bool:
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is not None and not all_finite(p.grad):
                return False
    return True


def _batches(n: int, batch_size: int) -> range:
    return range(0, n, batch_size)


@torch.no_grad()
def evaluate(
    model: SpikingNetwork,
    dataset: SpikeDataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    n: int | None = None,
    epoch: int = 0,
) -> EvalResult:
    """Classify (the first ``n`` samples of) ``dataset``; prediction = arg-max of the output counts.

    Ties go to the lowest index and all-zero counts predict class 0 (spec §1.3).
    """
    total = len(dataset) if n is None else min(n, len(dataset))
    counts = _eval_counts(model, dataset, 0, total, batch_size, torch.device(device), epoch)
    return _eval_result(counts, dataset.labels[:total])


def _eval_counts(model: SpikingNetwork, dataset: SpikeDataset, start: int, stop: int, batch_size: int,
                 device: torch.device, epoch: int) -> Tensor:
    """Output counts ``[stop − start, C]`` of samples ``start … stop − 1`` (CPU, float32)."""
    was_training = model.training
    model.eval()
    counts_all = []
    with torch.no_grad():
        for i in range(start, stop, batch_size):
            idx = torch.arange(i, min(i + batch_size, stop))
            x = dataset.get(idx, epoch).to(device)  # bool: each layer converts what it needs
            counts_all.append(model(x).sum(0).cpu())
    model.train(was_training)
    return torch.cat(counts_all) if counts_all else torch.zeros(0, dataset.n_classes)


def _eval_result(counts: Tensor, labels: Tensor) -> EvalResult:
    total = int(labels.numel())
    preds = counts.argmax(1) if total else torch.zeros(0, dtype=torch.int64)
    acc = float((preds == labels).double().mean()) if total else float("nan")
    return EvalResult(acc, preds, labels, counts)


def _evaluate_sharded(model: SpikingNetwork, dataset: SpikeDataset, ctx: D.DistContext, *, batch_size: int,
                      device: torch.device, epoch: int) -> EvalResult:
    """:func:`evaluate` with the test set cut into one contiguous range per process; counts summed."""
    total = len(dataset)
    start, stop = D.shard_range(total, ctx)
    full = torch.zeros(total, dataset.n_classes, dtype=torch.float32)
    full[start:stop] = _eval_counts(model, dataset, start, stop, batch_size, device, epoch)
    return _eval_result(D.all_reduce_tensor(full, ctx), dataset.labels[:total])


# --------------------------------------------------------------------------------------------------
# Checkpoint state
# --------------------------------------------------------------------------------------------------
@dataclass
class _State:
    epoch: int  # completed epochs
    step: int
    order: Tensor
    boost: Tensor
    shuffle_gen: torch.Generator
    metrics: list[dict[str, Any]]
    best: float
    wall_offset: float  # wall time of earlier (interrupted) sessions


def _checkpoint(cfg: RunConfig, model: SpikingNetwork, opt: torch.optim.Optimizer, st: _State) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": _to_cpu(opt.state_dict()),
        "boost": st.boost.clone(),
        "order": st.order.clone(),
        "rng": {"shuffle": st.shuffle_gen.get_state()},
        "epoch": st.epoch,
        "step": st.step,
        "metrics": [dict(m) for m in st.metrics],
        "best": st.best,
        "config": config_to_dict(cfg),
        "arch": cfg.model.arch,
        "torch_version": str(torch.__version__),
    }


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


# Config keys that may change between an interrupted run and its resumption.
_RESUMABLE = {"train.epochs", "train.device", "train.threads", "train.eval_batch_size", "train.out_dir",
              "train.checkpoint_dir", "train.tensorboard", "train.plots", "data.data_dir", "data.cache_mb", "name"}


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{key}.{k}" for k in _config_diff(va, vb)]
        elif va != vb:
            out.append(key)
    return out


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[SpikingNetwork, RunConfig, dict[str, Any]]:
    """Rebuild the network of a checkpoint (safe load) and return ``(model, config, checkpoint)``."""
    ck = load_checkpoint(path)
    cfg = config_from_dict(ck["config"])
    check_checkpoint_matches(ck, cfg, path)  # config vs weights, before building anything
    model = build_model(cfg)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise CheckpointError(path, f"weights do not fit the architecture {cfg.model.arch!r}: {e}") from None
    return model.to(device), cfg, ck


def evaluate_checkpoint(
    path: str | Path,
    *,
    data_dir: str | None = None,
    n: int | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
) -> tuple[EvalResult, RunConfig, dict[str, Any]]:
    """Evaluate a checkpoint on the test set of its own config (``data_dir`` if the data moved).

    Returns ``(result, config, checkpoint)``.
    """
    from ..config import apply_overrides

    dev = resolve_device(device)
    model, cfg, ck = model_from_checkpoint(path, dev)
    if data_dir:
        cfg = apply_overrides(cfg, [f"data.data_dir={data_dir}"])
    with num_threads(cfg.train.threads):
        _, test_set = load_datasets(cfg)
        res = evaluate(model, test_set, batch_size=batch_size or cfg.train.eval_batch_size, device=dev, n=n)
    return res, cfg, ck


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def _progress(total: int, desc: str, quiet: bool) -> Any:
    disable = quiet or not sys.stderr.isatty()
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True, unit="sample")


def _plots_at_end(model: SpikingNetwork, test_set: SpikeDataset, out_dir: Path, metrics: list[dict[str, Any]],
                  last_eval: EvalResult, device: torch.device, say: Callable[[str], None]) -> None:
    from .plots import have_matplotlib, plot_all

    if not have_matplotlib():
        return
    try:
        paths = plot_all(model, test_set, out_dir, metrics=metrics, eval_result=last_eval, device=device)
    except Exception as e:  # a plot must never lose a finished training run
        print(f"warning: plotting failed ({type(e).__name__}: {e})", file=sys.stderr)
    else:
        say(f"plots: {', '.join(p.name for p in paths)} in {out_dir}")


def _evaluate_all(model: SpikingNetwork, test_set: SpikeDataset, ctx: D.DistContext | None, batch_size: int,
                  device: torch.device, epoch: int) -> EvalResult:
    if ctx is None:
        return evaluate(model, test_set, batch_size=batch_size, device=device, epoch=epoch)
    return _evaluate_sharded(model, test_set, ctx, batch_size=batch_size, device=device, epoch=epoch)


def train(
    cfg: RunConfig,
    *,
    resume: bool = False,
    quiet: bool = False,
    echo: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train a network as configured; returns the metrics and the final/best test accuracy.

    Args:
        cfg: the run configuration.
        resume: continue from ``<checkpoint_dir>/last.pt``; the result equals an uninterrupted run. Without
            a ``last.pt`` yet, the run starts fresh (and says so).
        quiet: no progress bar and no per-epoch lines.
        echo: where per-epoch summary lines go (None = nowhere).

    Started by ``torchrun`` with ``WORLD_SIZE > 1`` (or inside an initialised process group), it trains
    data-parallel (:mod:`hm2bp.train.distributed`); every process returns the same result.
    """
    t = cfg.train
    with D.session(t.device, t.mode, t.batch_size) as (ctx, device), num_threads(t.threads):
        return _train(cfg, device, resume=resume, quiet=quiet, echo=echo, ctx=ctx)


class _NoLog:
    """Metrics sink of the processes other than rank 0."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _train(cfg: RunConfig, device: torch.device, *, resume: bool, quiet: bool,
           echo: Callable[[str], None] | None, ctx: D.DistContext | None = None) -> TrainResult:
    t = cfg.train
    main = ctx is None or ctx.is_main
    quiet = quiet or not main
    say: Callable[[str], None] = (lambda s: None) if (quiet or echo is None) else echo
    out_dir, ck_dir = cfg.out_dir, cfg.checkpoint_dir
    last_path, best_path = ck_dir / "last.pt", ck_dir / "best.pt"

    ck: dict[str, Any] | None = None
    preflight(cfg, device)  # run folders usable, weights and an eval batch fit: before data and model
    if resume and not last_path.exists():  # e.g. a job script that always passes --resume, killed early
        say(f"--resume: no {last_path} yet; starting a fresh run")
        resume = False
    if resume:  # check the checkpoint before the (possibly slow) data loading
        ck = load_checkpoint(last_path)
        diff = [k for k in _config_diff(ck["config"], config_to_dict(cfg)) if k not in _RESUMABLE]
        if diff:
            raise ConfigError(f"--resume: the config differs from the checkpoint's in {', '.join(diff)} "
                              f"({last_path}); only {', '.join(sorted(_RESUMABLE))} may change")
        warn_if_threads_changed(ck["config"], cfg, last_path)  # allowed, but not bit-exact
    train_set, val_set, test_set = load_splits(cfg)
    model = build_model(cfg).to(device)
    # refuse up front, with the estimate and a remedy, a step that cannot fit (instead of an OOM mid-epoch)
    check_training_fits(model, cfg.model.T, t.batch_size, device)
    check_layers_fire(model, train_set, cfg.model.thresholds, device)  # a hidden layer that never fires warns
    opt = _make_optimizer(cfg, model)
    n_train = len(train_set)
    st = _State(epoch=0, step=0, order=torch.arange(n_train), boost=torch.ones(n_train, dtype=torch.float64),
                shuffle_gen=sample_generator(t.seed, "shuffle"), metrics=[], best=-1.0, wall_offset=0.0)

    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        st.epoch, st.step = int(ck["epoch"]), int(ck["step"])
        st.order, st.boost = ck["order"].clone(), ck["boost"].clone()
        if st.order.numel() != n_train:
            raise CheckpointError(last_path, f"holds {st.order.numel()} training samples, the dataset {n_train}")
        st.shuffle_gen.set_state(ck["rng"]["shuffle"])
        st.metrics, st.best = list(ck["metrics"]), float(ck["best"])
        st.wall_offset = float(st.metrics[-1]["wall_time_s"]) if st.metrics else 0.0
        say(f"resuming {cfg.name} from {last_path} after epoch {st.epoch} (step {st.step})")

    log: MetricsLog | _NoLog = _NoLog()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_config_json(cfg, out_dir / "config.json")
        log = MetricsLog(out_dir, tensorboard=t.tensorboard, fresh=not resume, keep=st.metrics if resume else None)
    D.barrier(ctx)  # every process has read last.pt before rank 0 may replace it
    params = [p for group in opt.param_groups for p in group["params"]]
    t_start = time.perf_counter()
    last_eval: EvalResult | None = None
    use_reg = t.reg_lambda > 0 and t.reg_beta >= 0
    stopped_early = False
    try:
        for epoch in range(st.epoch, t.epochs):
            if _early_stop_due(st.metrics, t.early_stop_patience):  # checked first: also right after a resume
                stopped_early = True
                break
            t_epoch = time.perf_counter()
            lr = lr_at_epoch(t.lr, epoch, t.lr_schedule)
            for group in opt.param_groups:
                group["lr"] = lr
            st.order = shuffle_order(st.order, t.shuffle, st.shuffle_gen, t.n_swaps)
            step0 = st.step
            preds = torch.full((n_train,), -1, dtype=torch.int64)
            loss_sum, seen, correct, count_sum, skipped, cost_sum = 0.0, 0, 0, 0.0, 0, 0.0
            bar = _progress(n_train, f"epoch {epoch + 1}/{t.epochs}", quiet)
            for n_step, i in enumerate(_batches(n_train, t.batch_size)):
                if t.max_steps and n_step >= t.max_steps:
                    break
                idx = st.order[i : i + t.batch_size]
                b_global = int(idx.numel())
                if ctx is not None:
                    idx = D.shard(idx, ctx)
                b = int(idx.numel())
                opt.zero_grad(set_to_none=True)
                if b:
                    x = train_set.get(idx, epoch).to(device)  # bool: each layer converts what it needs
                    labels = train_set.labels[idx].to(device)
                    weights = st.boost[idx].to(device, torch.float32) if t.boosting else None
                    counts = model(x, labels).sum(0)
                    if ctx is None:
                        loss = _data_loss(cfg, counts, labels, weights)
                    else:  # this shard's part of the global batch mean: Σ_shard L_n / B
                        loss = _data_loss(cfg, counts, labels, weights, reduction="sum") / b_global
                    total = loss
                if use_reg and main:  # added once (rank 0) in a distributed run
                    reg = weight_regularizer(model, t.reg_lambda, t.reg_beta, t.reg_limit).to(device)
                    total = total + reg if b else reg
                if b or (use_reg and main):
                    total.backward()
                if ctx is not None:
                    D.all_reduce_gradients(params, ctx)
                if _grads_finite(opt):
                    opt.step()
                else:  # e.g. an output lateral loop gain >= 1 (spec §7.15): skip this update, keep training
                    skipped += 1
                st.step += 1
                if not b:
                    continue
                with torch.no_grad():
                    c = counts.detach()
                    plain = (_data_loss(cfg, c, labels, None) if (weights is not None or ctx is not None)
                             else loss.detach())
                    logged = _authors_cost(cfg, c, labels, plain, int(x.shape[0]))
                    p = c.argmax(1).cpu()
                preds[idx] = p
                loss_sum += float(plain) * b
                cost_sum += float(logged) * b
                seen += b
                correct += int((p == labels.cpu()).sum())
                count_sum += float(c.sum())
                if bar is not None:
                    bar.update(b_global)
                    bar.set_postfix(loss=f"{loss_sum / seen:.2f}", acc=f"{correct / seen:.3f}", refresh=False)
            if bar is not None:
                bar.close()
            if ctx is not None:  # the epoch's numbers over all processes; every process's predictions
                loss_sum, seen_f, correct_f, count_sum, cost_sum = D.all_reduce_sum(
                    [loss_sum, seen, correct, count_sum, cost_sum], ctx)
                seen, correct = int(seen_f), int(correct_f)
                preds = D.merge_predictions(preds, ctx)
            if not math.isfinite(loss_sum):
                from ..errors import NumericalError

                raise NumericalError(f"epoch {epoch}: the training loss is not finite")
            report_epoch_updates(cfg, model, epoch, skipped, st.step - step0, main)  # cause; all skipped: error
            if t.boosting:
                mask = preds >= 0
                st.boost[mask] = update_boost_weights(st.boost[mask], train_set.labels[mask], preds[mask],
                                                      train_set.n_classes)
            val_eval = (None if val_set is None
                        else _evaluate_all(model, val_set, ctx, t.eval_batch_size, device, epoch))
            last_eval = _evaluate_all(model, test_set, ctx, t.eval_batch_size, device, epoch)
            score = last_eval.accuracy if val_eval is None else val_eval.accuracy
            improved = score > st.best  # st.best: the selection accuracy (validation, else test)
            st.best = max(st.best, score)
            st.epoch = epoch + 1
            now = time.perf_counter()
            record = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": loss_sum / max(seen, 1),
                "train_cost_as_logged": cost_sum / max(seen, 1),
                "train_acc": correct / max(seen, 1),
                "val_acc": None if val_eval is None else val_eval.accuracy,
                "test_acc": last_eval.accuracy,
                "best_test_acc": max([last_eval.accuracy] + [m["test_acc"] for m in st.metrics]),
                "epoch_time_s": now - t_epoch,
                "wall_time_s": st.wall_offset + now - t_start,
                "step": st.step,
                "mean_output_count": count_sum / max(seen * train_set.n_classes, 1),
                "boost_mean": float(st.boost.mean()),
                "boost_max": float(st.boost.max()),
                "skipped_steps": skipped,
            }
            st.metrics.append(record)
            record.update(_selected_fields(st.metrics))
            log.log(record)
            if main:
                # best.pt before last.pt: a kill between the two then repeats the epoch on resume
                save_run_checkpoints(_checkpoint(cfg, model, opt, st), last_path, best_path if improved else None)
            val_txt = "" if val_eval is None else f"val {100 * val_eval.accuracy:.2f}%  "
            say(f"epoch {epoch + 1}/{t.epochs}  lr {lr:.3g}  loss {record['train_loss']:.3f}  "
                f"train {100 * record['train_acc']:.2f}%  {val_txt}test {100 * last_eval.accuracy:.2f}%  "
                f"(best {'val' if val_eval is not None else 'test'} {100 * st.best:.2f}%)  "
                f"{record['epoch_time_s']:.1f}s")
    finally:
        log.close()
    if last_eval is None:  # resumed a finished run: evaluate once so the result is complete
        last_eval = _evaluate_all(model, test_set, ctx, t.eval_batch_size, device, max(st.epoch - 1, 0))
    if t.plots and main:
        _plots_at_end(model, test_set, out_dir, st.metrics, last_eval, device, say)
    D.barrier(ctx)  # the files of rank 0 are complete when any process returns
    result = TrainResult(st.metrics, last_eval.accuracy, max(m["test_acc"] for m in st.metrics) if st.metrics
                         else last_eval.accuracy, out_dir, model, last_eval, stopped_early=stopped_early)
    _fill_selection(result)
    say(summary_line(result))
    return result


# --------------------------------------------------------------------------------------------------
# Model selection on the validation split, early stopping, the final summary
# --------------------------------------------------------------------------------------------------
def _selected(metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
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


def _selected_fields(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    sel = _selected(metrics)
    assert sel is not None
    on_val = sel.get("val_acc") is not None
    return {"selected_on": "val" if on_val else "test", "selected_epoch": sel["epoch"],
            "best_val_acc": sel["val_acc"] if on_val else None, "selected_test_acc": sel["test_acc"]}


def _early_stop_due(metrics: list[dict[str, Any]], patience: int) -> bool:
    """True when ``patience`` > 0 epochs have passed since the selected (best validation) epoch."""
    sel = _selected(metrics)
    if not patience or sel is None or sel.get("val_acc") is None:
        return False
    return int(metrics[-1]["epoch"]) - int(sel["epoch"]) >= patience


def _fill_selection(result: TrainResult) -> None:
    sel = _selected(result.metrics)
    if sel is None:
        return
    result.val_acc = result.metrics[-1].get("val_acc")
    result.selected_on = "val" if sel.get("val_acc") is not None else "test"
    result.selected_epoch = int(sel["epoch"])
    result.selected_test_acc = float(sel["test_acc"])
    result.selected_val_acc = sel.get("val_acc")


def summary_line(result: TrainResult) -> str:
    """One line: test accuracy of the checkpoint chosen on validation (``best.pt``) and of the last epoch."""
    if result.selected_epoch < 0:
        return "summary: no epoch trained"
    last = result.metrics[-1]

    def pct(v: float | None) -> str:
        return f"{100 * (v or 0.0):.2f}%"

    if result.selected_on == "val":
        chosen = (f"best.pt = epoch {result.selected_epoch + 1} chosen on validation (val "
                  f"{pct(result.selected_val_acc)}): test {pct(result.selected_test_acc)}")
    else:
        chosen = (f"best.pt = epoch {result.selected_epoch + 1} chosen on the TEST set (no validation split; "
                  f"set data.n_val): test {pct(result.selected_test_acc)}")
    val_last = "" if last.get("val_acc") is None else f"val {pct(last['val_acc'])}, "
    stop = ", stopped early" if result.stopped_early else ""
    return f"summary: {chosen}; last epoch {int(last['epoch']) + 1}: {val_last}test {pct(last['test_acc'])}{stop}"
