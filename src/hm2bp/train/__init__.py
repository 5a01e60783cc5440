"""Training, evaluation, checkpoints, metrics and plots for HM2-BP spiking networks.

>>> from hm2bp.config import load_config
>>> from hm2bp.train import train
>>> result = train(load_config("digits", ["train.epochs=1"]))   # doctest: +SKIP
"""

from .boosting import update_boost_weights
from .checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint
from .datasets import SpikeDataset, load_datasets
from .evaluate import EvalResult, evaluate, evaluate_checkpoint, model_from_checkpoint
from .interrupt import TrainingInterrupted
from .loop import TrainResult, Trainer, train
from .rundir import RunFolderError
from .runtime import build_model, resolve_device
from .schedule import lr_at_epoch, shuffle_order

__all__ = [
    "train",
    "Trainer",
    "TrainingInterrupted",
    "RunFolderError",
    "evaluate",
    "evaluate_checkpoint",
    "build_model",
    "model_from_checkpoint",
    "resolve_device",
    "TrainResult",
    "EvalResult",
    "SpikeDataset",
    "load_datasets",
    "update_boost_weights",
    "lr_at_epoch",
    "shuffle_order",
    "CheckpointError",
    "atomic_write_bytes",
    "save_checkpoint",
    "load_checkpoint",
]
