"""Training, evaluation, checkpoints, metrics and plots for HM2-BP spiking networks.

>>> from hm2bp.config import load_config
>>> from hm2bp.train import train
>>> result = train(load_config("digits", ["train.epochs=1"]))   # doctest: +SKIP
"""

import sys
import types
from typing import Any

from .boosting import update_boost_weights
from .checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint
from .datasets import SpikeDataset, load_datasets
from .evaluate import EvalResult, evaluate, evaluate_checkpoint, model_from_checkpoint
from .interrupt import TrainingInterrupted
from .loop import Trainer, TrainResult, train
from .rundir import RunFolderError
from .runtime import build_model, resolve_device
from .schedule import lr_at_epoch, shuffle_order

__all__ = [
    "CheckpointError",
    "EvalResult",
    "RunFolderError",
    "SpikeDataset",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "atomic_write_bytes",
    "build_model",
    "evaluate",
    "evaluate_checkpoint",
    "load_checkpoint",
    "load_datasets",
    "lr_at_epoch",
    "model_from_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "shuffle_order",
    "train",
    "update_boost_weights",
]


class _CallablePackage(types.ModuleType):
    """``hm2bp.train`` names both this subpackage and the function :func:`train`; the import system binds
    the subpackage to the name, so the subpackage runs :func:`train` when called: ``hm2bp.train(cfg)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
