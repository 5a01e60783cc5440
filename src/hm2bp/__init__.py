"""hm2bp: hybrid macro/micro level backpropagation (HM2-BP) for spiking neural networks.

Tensors are time-major: spike trains are ``[T, B, N]`` (FC) or ``[T, B, C, H, W]`` (conv/pool).

The names below are the public API. They are loaded on first use (module ``__getattr__``), so that
``import hm2bp`` itself imports neither torch nor the training code::

    import hm2bp
    net = hm2bp.build_network("784-800-10", thresholds=[20, 8])
    result = hm2bp.train(hm2bp.load_config("digits", ["train.epochs=1"]))

The algorithm is described in docs/algorithm.md, the package's layout in docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"  # the one place the version is written; pyproject.toml reads it from here

# public name -> the module that defines it (relative to this package)
_EXPORTS: dict[str, str] = {
    # layers and networks
    "SpikingLinear": ".nn.layers",
    "SpikingConv2d": ".nn.layers",
    "SpikingPool2d": ".nn.layers",
    "Reservoir": ".nn.layers",
    "Flatten": ".nn.layers",
    "SpikingNetwork": ".nn.network",
    "build_network": ".nn.network",
    "Architecture": ".arch",
    "parse_architecture": ".arch",
    # the neuron
    "NeuronParams": ".functional.params",
    "simulate_lif": ".functional.neuron",
    # losses and the regulariser
    "rate_loss": ".loss",
    "softmax_loss": ".loss",
    "target_counts": ".loss",
    "weight_regularizer": ".loss",
    # input encoders
    "poisson_encode": ".encoding",
    "augment": ".encoding",
    "bsa_encode": ".encoding",
    # evaluation
    "EvalResult": ".inference",
    "evaluate_images": ".inference",
    "predict": ".inference",
    # training
    "train": ".train",  # the subpackage, callable: hm2bp.train(cfg) is hm2bp.train.train(cfg)
    "evaluate": ".train",
    "evaluate_checkpoint": ".train",
    "model_from_checkpoint": ".train",
    "TrainResult": ".train",
    "load_checkpoint": ".train",
    "save_checkpoint": ".train",
    # configuration
    "RunConfig": ".config",
    "ModelConfig": ".config",
    "DataConfig": ".config",
    "TrainConfig": ".config",
    "load_config": ".config",
    "apply_overrides": ".config",
    "config_from_dict": ".config",
    "list_presets": ".config",
    # errors
    "HM2BPError": ".errors",
    "ConfigError": ".errors",
    "DataFormatError": ".errors",
    "NumericalError": ".errors",
}
# public name -> its name in the defining module, where they differ
_RENAMED = {"parse_architecture": "parse"}

__all__ = [
    "Architecture",
    "ConfigError",
    "DataConfig",
    "DataFormatError",
    "EvalResult",
    "Flatten",
    "HM2BPError",
    "ModelConfig",
    "NeuronParams",
    "NumericalError",
    "Reservoir",
    "RunConfig",
    "SpikingConv2d",
    "SpikingLinear",
    "SpikingNetwork",
    "SpikingPool2d",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "apply_overrides",
    "augment",
    "bsa_encode",
    "build_network",
    "config_from_dict",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_images",
    "list_presets",
    "load_checkpoint",
    "load_config",
    "model_from_checkpoint",
    "parse_architecture",
    "poisson_encode",
    "predict",
    "rate_loss",
    "save_checkpoint",
    "simulate_lif",
    "softmax_loss",
    "target_counts",
    "train",
    "weight_regularizer",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hm2bp' has no attribute {name!r}")
    imported = importlib.import_module(module, __name__)
    # hm2bp.train is the training subpackage itself, which is callable as its train() (train/__init__.py):
    # the import system binds the subpackage to this name anyway, so the name must not change meaning
    value = imported if name == "train" else getattr(imported, _RENAMED.get(name, name))
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from .arch import Architecture
    from .arch import parse as parse_architecture
    from .config import (
        DataConfig,
        ModelConfig,
        RunConfig,
        TrainConfig,
        apply_overrides,
        config_from_dict,
        list_presets,
        load_config,
    )
    from .encoding import augment, bsa_encode, poisson_encode
    from .errors import ConfigError, DataFormatError, HM2BPError, NumericalError
    from .functional.neuron import simulate_lif
    from .functional.params import NeuronParams
    from .inference import EvalResult, evaluate_images, predict
    from .loss import rate_loss, softmax_loss, target_counts, weight_regularizer
    from .nn.layers import Flatten, Reservoir, SpikingConv2d, SpikingLinear, SpikingPool2d
    from .nn.network import SpikingNetwork, build_network
    from .train import (
        TrainResult,
        evaluate,
        evaluate_checkpoint,
        load_checkpoint,
        model_from_checkpoint,
        save_checkpoint,
        train,  # at run time the callable subpackage (see __getattr__)
    )
