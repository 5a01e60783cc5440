"""Run configuration: frozen nested dataclasses, TOML presets and dotted command-line overrides.

A run is described by a :class:`RunConfig` holding a :class:`ModelConfig`, a :class:`DataConfig` and a
:class:`TrainConfig`. Every value is checked in ``__post_init__``; a bad value raises
:class:`~hm2bp.errors.ConfigError` naming the key.

Sources of a configuration, applied in this order:

1. the defaults below (the paper's MNIST fully connected set-up, docs/algorithm.md §5);
2. a TOML file or a bundled preset (``hm2bp/configs/<name>.toml``), with sections ``[model]``,
   ``[data]`` and ``[train]`` and an optional top-level ``name``;
3. dotted overrides such as ``train.lr=1e-3`` or ``model.thresholds=20,8``, cast to the field's type.

Example:
    >>> cfg = load_config("digits", ["train.epochs=2", "model.T=50"])
    >>> cfg.train.epochs, cfg.model.T
    (2, 50)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .arch import parse as parse_architecture
from .bounds import check_model_bounds, check_train_bounds
from .config_types import _cast, _check_choice, _check_positive, _check_types, _fail, _hints
from .errors import ConfigError

__all__ = [
    "DATASETS",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "list_presets",
    "load_config",
    "preset_path",
    "write_config_json",
]

#: Datasets the trainer can load (see :mod:`hm2bp.train.datasets`).
DATASETS = ("digits", "mnist", "emnist", "nmnist", "ti46", "fsdd")
C_INT_MAX = 2**31 - 1
"""Largest step count, T_ref, layer size or batch: the compiled kernels take them as 32-bit integers."""


@dataclass(frozen=True)
class ModelConfig:
    """Network and output coding (docs/algorithm.md §1, §3).

    Attributes:
        arch: architecture string, e.g. ``784-800-10`` or ``28x28-15c5-p2-40c5-p2-300-10``.
        thresholds: one threshold ν per conv, pool and FC layer (VTH).
        T: time steps per sample (END_TIME).
        tau_m: membrane time constant τ_m (steps).
        tau_s: synaptic time constant τ_s (steps).
        t_ref: refractory period (steps).
        lateral_inhibition: weight w0 of the fixed output lateral inhibition; 0 switches it off.
        effect_ratio: use r = e/o_j in the error sent down (EFFECT_RATIO).
        loss: "rate" (dead-zone count loss, §3.1) or "softmax" (§3.6).
        desired: target output count of the label neuron (DESIRED_LEVEL).
        undesired: target output count of the other output neurons (UNDESIRED_LEVEL).
        margin: dead zone M of the rate loss: count errors within ±M cost nothing.
        fc_init: FC weights start as U(−fc_init, +fc_init) (docs/algorithm.md §4.5).
        conv_init: conv weights start as U(−conv_init, +conv_init) (docs/algorithm.md §4.5).
    """

    arch: str = "784-800-10"
    thresholds: tuple[float, ...] = (20.0, 8.0)
    T: int = 400
    tau_m: float = 64.0
    tau_s: float = 8.0
    t_ref: int = 2
    lateral_inhibition: float = 1.0
    effect_ratio: bool = True
    loss: str = "rate"
    desired: int = 35
    undesired: int = 5
    margin: float = 5.0
    fc_init: float = 1.0
    conv_init: float = 0.5

    def __post_init__(self) -> None:
        s = "model"
        _check_types(self, s)
        try:
            layers = parse_architecture(self.arch).layers
        except ConfigError as e:
            raise ConfigError(f"model.arch: {e}") from None
        if max(spec.size for spec in layers) > C_INT_MAX:
            _fail(s, "arch", f"layer sizes must be <= {C_INT_MAX}; got {self.arch!r}")
        if len(self.thresholds) != len(layers):
            _fail(s, "thresholds", f"architecture {self.arch!r} has {len(layers)} conv/pool/FC layers, so it needs "
                                   f"{len(layers)} thresholds; got {len(self.thresholds)} ({list(self.thresholds)})")
        for v in self.thresholds:
            if not (math.isfinite(v) and v > 0):
                _fail(s, "thresholds", f"every threshold must be > 0; got {list(self.thresholds)}")
        if self.T < 2:
            _fail(s, "T", f"must be >= 2 time steps; got {self.T}")
        if self.T > C_INT_MAX:
            _fail(s, "T", f"must be <= {C_INT_MAX} time steps; got {self.T}")
        _check_positive(s, "tau_m", self.tau_m)
        _check_positive(s, "tau_s", self.tau_s)
        if self.tau_m == self.tau_s:
            _fail(s, "tau_s", "must differ from tau_m (the PSP kernel divides by 1 − tau_s/tau_m)")
        if not 0 <= self.t_ref <= self.T:
            _fail(s, "t_ref", f"must lie in [0, T] = [0, {self.T}] steps; got {self.t_ref}")
        _check_positive(s, "lateral_inhibition", self.lateral_inhibition, allow_zero=True)
        _check_choice(s, "loss", self.loss, ("rate", "softmax"))
        if not 0 <= self.undesired < self.desired:
            _fail(s, "desired", f"need 0 <= undesired < desired; got undesired={self.undesired}, "
                                f"desired={self.desired}")
        if self.desired > self.T:
            _fail(s, "desired", f"a neuron cannot fire {self.desired} times in T={self.T} steps")
        _check_positive(s, "margin", self.margin, allow_zero=True)
        _check_positive(s, "fc_init", self.fc_init)
        _check_positive(s, "conv_init", self.conv_init)
        check_model_bounds(self)  # float32 range, spiking thresholds, tau in steps (#18 items 4, 17)

    @property
    def n_classes(self) -> int:
        return parse_architecture(self.arch).n_classes


@dataclass(frozen=True)
class DataConfig:
    """Dataset and input encoding (docs/algorithm.md §1.5).

    Attributes:
        dataset: one of :data:`DATASETS`.
        data_dir: folder of the dataset files (not needed for ``digits``).
        n_train: use only the first n training samples (0 = all).
        n_test: use only the first n test samples (0 = all).
        encoding: "fixed" (one raster per sample drawn at load and reused every epoch, as the MNIST-FC
            runs) or "fresh" (a new Poisson raster per sample per epoch). Speech and N-MNIST inputs are
            deterministic, so this only matters for image datasets.
        augment: warp training images each epoch (elastic + scale + rotation, docs/algorithm.md §1.5); implies fresh
            rasters for the training set.
        augment_shared_field: one warp per epoch shared by every training sample (the authors' code).
            For N-MNIST, ``augment`` instead shifts each training recording by a random whole-pixel offset
            in [−augment_shift, augment_shift]² per epoch (not in the authors' code; for small training sets).
        augment_shift: N-MNIST augmentation: the largest shift in pixels.
        max_rate_div: Poisson rate p = q / (max_rate_div · 255).
        nmnist_bin_us: N-MNIST time bin in µs.
        emnist_subset: EMNIST subset ("balanced" = 47 classes).
        digits_n_test: size of the held-out test split of scikit-learn's digits.
        split_seed: seed of the digits train/test split, of data-order shuffles done once at load and of
            the validation split.
        n_val, val_fraction: hold out this many (or this fraction of the) training samples as a validation
            set (0 = none; at most one of the two; an override of one clears the other, e.g. a preset's
            ``val_fraction``). They are drawn, seeded by ``split_seed`` only, from the first ``n_train``
            training samples, which then train on the rest: the same split in every epoch, on resume, on every distributed rank and for every ``train.seed``. Validation rasters are fixed
            and never augmented. The validation set picks ``best.pt`` and drives early stopping; the test
            set is only reported.
        cache_mb: keep deterministic rasters in memory, bit-packed, up to this many MiB per split.
    """

    dataset: str = "mnist"
    data_dir: str = ""
    n_train: int = 0
    n_test: int = 0
    encoding: str = "fixed"
    augment: bool = False
    augment_shared_field: bool = True
    augment_shift: int = 2
    max_rate_div: float = 5.5
    nmnist_bin_us: float = 600.0
    emnist_subset: str = "balanced"
    digits_n_test: int = 360
    split_seed: int = 0
    n_val: int = 0
    val_fraction: float = 0.0
    cache_mb: float = 1024.0

    def __post_init__(self) -> None:
        s = "data"
        _check_types(self, s)
        _check_choice(s, "dataset", self.dataset, DATASETS)
        _check_choice(s, "encoding", self.encoding, ("fixed", "fresh"))
        _check_choice(s, "emnist_subset", self.emnist_subset,
                      ("balanced", "byclass", "bymerge", "digits", "letters", "mnist"))
        if self.n_train < 0:
            _fail(s, "n_train", f"must be >= 0 (0 = all); got {self.n_train}")
        if self.n_test < 0:
            _fail(s, "n_test", f"must be >= 0 (0 = all); got {self.n_test}")
        _check_positive(s, "max_rate_div", self.max_rate_div)
        if self.max_rate_div < 1:
            _fail(s, "max_rate_div", f"must be >= 1 so that the firing probability stays <= 1; got {self.max_rate_div}")
        _check_positive(s, "nmnist_bin_us", self.nmnist_bin_us)
        if not 0 < self.digits_n_test < 1797:
            _fail(s, "digits_n_test", f"must lie in 1…1796 (the digits set has 1797 images); got {self.digits_n_test}")
        _check_positive(s, "cache_mb", self.cache_mb, allow_zero=True)
        if self.split_seed < 0:
            _fail(s, "split_seed", f"must be >= 0; got {self.split_seed}")
        if self.n_val < 0:
            _fail(s, "n_val", f"must be >= 0 (0 = no validation split); got {self.n_val}")
        if not (math.isfinite(self.val_fraction) and 0 <= self.val_fraction < 1):
            _fail(s, "val_fraction", f"must lie in [0, 1); got {self.val_fraction}")
        if self.n_val and self.val_fraction:
            _fail(s, "n_val", f"give either data.n_val or data.val_fraction, not both; got n_val={self.n_val}, "
                              f"val_fraction={self.val_fraction}")
        if self.augment and self.dataset not in ("mnist", "emnist", "digits", "nmnist"):
            _fail(s, "augment", f"augmentation applies to image datasets and N-MNIST only, not {self.dataset!r}")
        if not 0 <= self.augment_shift < 34:
            _fail(s, "augment_shift", f"must lie in 0…33 pixels (the N-MNIST sensor is 34 × 34); got {self.augment_shift}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping (docs/algorithm.md §4).

    Attributes:
        mode: "online" (batch 1, one update per sample: the authors' exact procedure) or "minibatch"
            (mean of the per-sample rules over ``batch_size`` samples).
        batch_size: samples per update; must be 1 in online mode.
        epochs: number of passes over the training set (TEST_EPOCH).
        optimizer: "adam" (β1 0.9, β2 0.999, ε 1e-8) or "sgd" (with ``momentum``).
        lr: base learning rate.
        lr_schedule: "code": the authors' current code, epochs 0 and 1 use lr, epoch e ≥ 1 uses lr/√e
            (epoch 2 → 7.07e-4 for lr 1e-3); "sqrt": the older CNN run, lr/√(e+1); "constant"; "cosine": every
            update, from lr down to 0 over all ``epochs`` (the mini-batch recipe).
        warmup_steps: linear learning-rate warm-up over the first updates (0 = none).
        momentum: SGD momentum μ.
        reg_lambda: weight regulariser strength λ (docs/algorithm.md §4.1); 0 switches it off.
        reg_beta: weight regulariser β (docs/algorithm.md §4.1).
        reg_limit: weight regulariser limit L (docs/algorithm.md §4.1).
        boosting: per-sample boost weights updated after each epoch (docs/algorithm.md §4.4).
        shuffle: "swaps5000" (each epoch swaps ``n_swaps`` random pairs of the current order, as the
            authors), "permutation" (a fresh random order each epoch) or "none".
        n_swaps: pair swaps per epoch for "swaps5000".
        seed: seed of every random draw (weights, data order, Poisson rasters).
        device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available).
        threads: CPU threads for torch (0 = torch's default).
        eval_batch_size: batch size of the evaluation passes.
        max_steps: stop each epoch after this many updates (0 = no limit; for smoke tests).
        early_stop_patience: stop when the validation accuracy has not improved for this many epochs
            (0 = off; needs a validation split, ``data.n_val`` or ``data.val_fraction``).
        out_dir: run folder for config.json, metrics.jsonl, plots ("" = runs/<name>).
        checkpoint_dir: folder of last.pt / best.pt ("" = out_dir).
        checkpoint_every_steps: also write last.pt inside an epoch after every this many updates (0 = off).
        checkpoint_every_minutes: also write last.pt inside an epoch when this many minutes passed since the
            last checkpoint (0 = off). Either kind keeps the exact data order and RNG state: ``--resume``
            continues at the next update and ends bit-identical to an uninterrupted run. Ctrl-C (SIGINT) or
            SIGTERM writes one too.
        tensorboard: also log to TensorBoard when it is installed.
        plots: write PNG plots at the end of training when matplotlib is installed.
        init_from: an hm2bp checkpoint (``last.pt``/``best.pt``) of the same architecture whose weights start
            this run ("" = random initial weights). Only the weights carry over: the optimizer, learning-rate
            schedule, data order and boost weights start fresh (fine-tuning, or a warm restart of a cosine
            schedule). ``--resume`` of such a run continues from its own ``last.pt``.
    """

    mode: str = "online"
    batch_size: int = 1
    epochs: int = 200
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "code"
    warmup_steps: int = 0
    momentum: float = 0.9
    reg_lambda: float = 10.0
    reg_beta: float = 0.04
    reg_limit: float = 8.0
    boosting: bool = True
    shuffle: str = "swaps5000"
    n_swaps: int = 5000
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    eval_batch_size: int = 256
    max_steps: int = 0
    early_stop_patience: int = 0
    out_dir: str = ""
    checkpoint_dir: str = ""
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 10.0
    tensorboard: bool = True
    plots: bool = True
    init_from: str = ""

    def __post_init__(self) -> None:
        s = "train"
        _check_types(self, s)
        _check_choice(s, "mode", self.mode, ("online", "minibatch"))
        if not 1 <= self.batch_size <= C_INT_MAX:
            _fail(s, "batch_size", f"must lie in [1, {C_INT_MAX}]; got {self.batch_size}")
        if self.mode == "online" and self.batch_size != 1:
            _fail(s, "batch_size", f"online mode updates after every sample, so batch_size must be 1; got "
                                   f"{self.batch_size} (use train.mode=minibatch for larger batches)")
        if self.epochs < 1:
            _fail(s, "epochs", f"must be >= 1; got {self.epochs}")
        _check_choice(s, "optimizer", self.optimizer, ("adam", "sgd"))
        _check_positive(s, "lr", self.lr)
        _check_choice(s, "lr_schedule", self.lr_schedule, ("code", "sqrt", "constant", "cosine"))
        if self.warmup_steps < 0:
            _fail(s, "warmup_steps", f"must be >= 0 (0 = no warm-up); got {self.warmup_steps}")
        if not 0 <= self.momentum < 1:
            _fail(s, "momentum", f"must lie in [0, 1); got {self.momentum}")
        _check_positive(s, "reg_lambda", self.reg_lambda, allow_zero=True)
        _check_positive(s, "reg_beta", self.reg_beta, allow_zero=True)
        _check_positive(s, "reg_limit", self.reg_limit)
        _check_choice(s, "shuffle", self.shuffle, ("swaps5000", "permutation", "none"))
        if self.n_swaps < 0:
            _fail(s, "n_swaps", f"must be >= 0; got {self.n_swaps}")
        if self.seed < 0:
            _fail(s, "seed", f"must be >= 0; got {self.seed}")
        dev = self.device
        if not (dev in ("cpu", "cuda", "auto") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            _fail(s, "device", f"must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {dev!r}")
        if not 0 <= self.threads <= 4096:
            _fail(s, "threads", f"must be between 0 (torch's default) and 4096; got {self.threads}")
        if not 1 <= self.eval_batch_size <= C_INT_MAX:
            _fail(s, "eval_batch_size", f"must lie in [1, {C_INT_MAX}]; got {self.eval_batch_size}")
        if self.max_steps < 0:
            _fail(s, "max_steps", f"must be >= 0 (0 = no limit); got {self.max_steps}")
        if self.checkpoint_every_steps < 0:
            _fail(s, "checkpoint_every_steps", f"must be >= 0 (0 = off); got {self.checkpoint_every_steps}")
        if not 0 <= self.checkpoint_every_minutes < float("inf"):
            _fail(s, "checkpoint_every_minutes", f"must be >= 0 minutes (0 = off); got {self.checkpoint_every_minutes}")
        if self.early_stop_patience < 0:
            _fail(s, "early_stop_patience", f"must be >= 0 (0 = off); got {self.early_stop_patience}")
        check_train_bounds(self)  # counts that drive allocations, device index (#18 items 11, 17)


@dataclass(frozen=True)
class RunConfig:
    """A whole run: a name plus the model, data and train sections."""

    name: str = "mnist_fc"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if (not isinstance(self.name, str) or not self.name.strip(" .") or any(c in self.name for c in "/\\\0")
                or self.name != self.name.strip()):
            # the run folder is runs/<name>: '.', '..' or a separator would put the run files elsewhere
            raise ConfigError(f"name: must be a folder name inside runs/ (no path separators or surrounding spaces, "
                              f"not '.' or '..'); got {self.name!r}")
        if self.data.dataset == "digits" and parse_architecture(self.model.arch).input_shape not in ((64,), (1, 8, 8)):
            raise ConfigError(f"model.arch: the digits images have 64 pixels, so the input must be 64 or 8x8; "
                              f"got {self.model.arch!r}")
        if self.train.early_stop_patience and not (self.data.n_val or self.data.val_fraction):
            raise ConfigError(f"train.early_stop_patience={self.train.early_stop_patience} needs a validation split: "
                              "set data.n_val or data.val_fraction (the test set is never used to stop)")

    @property
    def out_dir(self) -> Path:
        return Path(self.train.out_dir) if self.train.out_dir else Path("runs") / self.name

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.train.checkpoint_dir) if self.train.checkpoint_dir else self.out_dir


_SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


# --------------------------------------------------------------------------------------------------
# Building configs from dicts, TOML and overrides
# --------------------------------------------------------------------------------------------------
def _section_from_dict(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"[{name}] must be a table of keys, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
                          f"known keys of [{name}]: {', '.join(sorted(known))}")
    return cls(**values)


def config_from_dict(d: Mapping[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from a nested dict (TOML or ``config.json`` layout); checks every key.

    Every problem is a :class:`ConfigError`, also values that break Python's own conversions (an int
    beyond float range, a 5,000-digit integer, ...).
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"a config must be a table of sections, got {type(d).__name__}")
    try:
        return _config_from_mapping(d)
    except ConfigError:
        raise
    except (OverflowError, ValueError, TypeError, RecursionError) as e:
        raise ConfigError(f"invalid value: {type(e).__name__}: {str(e)[:200]}") from None


def _config_from_mapping(d: Mapping[str, Any]) -> RunConfig:
    unknown = sorted(set(d) - {"name", *_SECTIONS})
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; expected 'name', [model], [data], [train]")
    kwargs: dict[str, Any] = {s: _section_from_dict(s, cls, d.get(s, {})) for s, cls in _SECTIONS.items()}
    if "name" in d:
        kwargs["name"] = d["name"]
    return RunConfig(**kwargs)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The nested dict of a config (tuples become lists), as written to ``config.json``."""
    d: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(cfg)))
    return d


def _split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected section.key=value, e.g. train.lr=1e-3")
    return key, value


def apply_overrides(cfg: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Return ``cfg`` with dotted overrides ``section.key=value`` (or ``name=value``) applied.

    Values are cast by the field's type; the result is validated again as a whole.
    """
    d = config_to_dict(cfg)
    for item in overrides:
        key, value = _split_override(item)
        if key == "name":
            d["name"] = value
            continue
        section, dot, attr = key.partition(".")
        if not dot or section not in _SECTIONS:
            raise ConfigError(f"override {item!r}: unknown key {key!r}; use model.<key>, data.<key>, train.<key> "
                              "or name")
        hints = _hints(_SECTIONS[section])
        if attr not in hints:
            raise ConfigError(f"override {item!r}: unknown key {key!r}; known keys of [{section}]: "
                              f"{', '.join(sorted(hints))}")
        d[section][attr] = _cast(section, attr, hints[attr], value)
        if section == "data" and attr in _ALTERNATIVES:  # setting one of the two sizes clears the other
            d["data"][_ALTERNATIVES[attr]] = 0
    return config_from_dict(d)


#: Keys that are two ways of giving one quantity: an override of one clears the other.
_ALTERNATIVES = {"n_val": "val_fraction", "val_fraction": "n_val"}


def list_presets() -> list[str]:
    """Names of the bundled presets (``hm2bp/configs/*.toml``)."""
    folder = resources.files("hm2bp") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_path(name: str) -> Path:
    """Path of a bundled preset, e.g. ``preset_path("mnist_fc")``."""
    folder = resources.files("hm2bp") / "configs"
    p = folder / f"{name}.toml"
    if not p.is_file():
        raise ConfigError(f"unknown preset {name!r}; bundled presets: {', '.join(list_presets())}")
    return Path(str(p))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; bundled presets: {', '.join(list_presets())}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # not UTF-8, huge integer literal, deep nesting
        raise ConfigError(f"{path}: unreadable TOML: {type(e).__name__}: {str(e)[:200]}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, ValueError, RecursionError) as e:  # incl. JSONDecodeError, UnicodeDecodeError, huge ints
        raise ConfigError(f"{path}: cannot read JSON config: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: a JSON config must be an object")
    return d


def load_config(source: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """Load a config, then apply overrides.

    ``source`` is a preset name (default ``digits``), a TOML file, or a run's ``config.json`` (to repeat a
    run exactly). A file without ``name`` takes its file stem as the run name.
    """
    if source is None:
        source = "digits"
    text = os.fspath(source)
    path = Path(text)
    if not path.suffix and not path.exists():
        path = preset_path(text)
    d = _read_json(path) if path.suffix.lower() == ".json" else _read_toml(path)
    d.setdefault("name", path.stem)
    overrides = list(overrides)
    try:
        d = _with_mode_recipe(d, overrides)
        cfg = config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides)


#: Optional TOML table of a preset holding the mini-batch recipe: ``[minibatch.train]``, ``[minibatch.model]``,
#: ``[minibatch.data]`` keys that replace the preset's own when the run is in mini-batch mode.
RECIPE_SECTION = "minibatch"


def _mode_of(d: Mapping[str, Any], overrides: Sequence[str]) -> str:
    mode = d.get("train", {}).get("mode", TrainConfig.mode) if isinstance(d.get("train", {}), Mapping) else ""
    for item in overrides:
        key, value = _split_override(item)
        if key == "train.mode":
            mode = value.strip()
    return str(mode)


def _with_mode_recipe(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``d`` without its ``[minibatch]`` table, whose keys are merged in when the run (after ``overrides``)
    is in mini-batch mode: preset < preset's mini-batch recipe < command-line overrides. An online run
    (the authors' exact procedure) ignores the table."""
    recipe = d.get(RECIPE_SECTION)
    if recipe is None:
        return d
    out = {k: v for k, v in d.items() if k != RECIPE_SECTION}
    if not isinstance(recipe, Mapping) or set(recipe) - set(_SECTIONS):
        raise ConfigError(f"[{RECIPE_SECTION}] must hold only the tables [{RECIPE_SECTION}.model], "
                          f"[{RECIPE_SECTION}.data], [{RECIPE_SECTION}.train]")
    if _mode_of(d, overrides) != "minibatch":
        return out
    for section, values in recipe.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{RECIPE_SECTION}.{section}] must be a table of keys")
        out[section] = {**out.get(section, {}), **values}
    # so that the preset's online batch size 1 is not checked against an online mode before the overrides
    out["train"] = {**out.get("train", {}), "mode": "minibatch"}
    return out


def write_config_json(cfg: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as indented JSON (atomically)."""
    from .io.files import atomic_write_bytes

    text = json.dumps(config_to_dict(cfg), indent=2) + "\n"
    atomic_write_bytes(Path(path), text.encode())
