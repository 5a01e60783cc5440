"""What every config key means: its meaning, type, default and allowed range, for ``hm2bp config show``
and ``hm2bp train --help``.

One source for each piece: the meaning is the key's entry in the ``Attributes:`` section of its
dataclass docstring in :mod:`hm2bp.config` (parsed here, so a key documented there is documented
everywhere); the allowed range is :data:`RANGES` below, next to nothing else; type and default come from
the dataclass fields themselves.

Example:
    >>> from hm2bp.config_doc import key_docs
    >>> doc = key_docs()["train.max_steps"]
    >>> doc.type, doc.default
    ('int', 0)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
import typing
from dataclasses import dataclass
from typing import Any

from .config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    config_to_dict,
)

__all__ = ["RANGES", "KeyDoc", "cli_value", "format_config", "format_key_list", "key_docs"]

SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _choices(*values: str) -> str:
    return " | ".join(values)


#: Allowed values of each numeric or free-form key, as checked in the dataclasses' ``__post_init__``.
RANGES: dict[str, str] = {
    "model.arch": "input (N or HxW or CxHxW) - layers (N, KcS conv, pS pool) - classes, e.g. 784-800-10",
    "model.thresholds": "one value > 0 per conv, pool and FC layer",
    "model.T": ">= 2 (and >= model.desired)",
    "model.tau_m": "> 0, != tau_s",
    "model.tau_s": "> 0, != tau_m",
    "model.t_ref": ">= 0",
    "model.lateral_inhibition": ">= 0 (0 = off)",
    "model.desired": "undesired < desired <= T",
    "model.undesired": "0 <= undesired < desired",
    "model.margin": ">= 0",
    "model.fc_init": "> 0",
    "model.conv_init": "> 0",
    "data.data_dir": "a folder (stored absolute by the CLI); not needed for digits",
    "data.n_train": ">= 0 (0 = all)",
    "data.n_test": ">= 0 (0 = all)",
    "data.augment": "true | false (image datasets: warps; nmnist: random shifts)",
    "data.augment_shift": "0 ... 33 pixels (nmnist augmentation)",
    "data.max_rate_div": ">= 1",
    "data.nmnist_bin_us": "> 0",
    "data.digits_n_test": "1 ... 1796",
    "data.split_seed": ">= 0",
    "data.n_val": ">= 0 (0 = none; not with val_fraction)",
    "data.val_fraction": "[0, 1) (0 = none; not with n_val)",
    "data.cache_mb": ">= 0",
    "train.batch_size": ">= 1 (1 in online mode)",
    "train.epochs": ">= 1",
    "train.lr": "> 0",
    "train.warmup_steps": ">= 0 (0 = no warm-up)",
    "train.momentum": "[0, 1)",
    "train.reg_lambda": ">= 0 (0 = off)",
    "train.reg_beta": ">= 0",
    "train.reg_limit": "> 0",
    "train.n_swaps": ">= 0",
    "train.seed": ">= 0",
    "train.device": _choices("cpu", "cuda", "cuda:N", "auto"),
    "train.threads": "0 ... 4096 (0 = torch's default)",
    "train.eval_batch_size": ">= 1",
    "train.max_steps": ">= 0 (0 = no limit)",
    "train.early_stop_patience": ">= 0 (0 = off; needs a validation split)",
    "train.out_dir": "a folder (\"\" = runs/<name>)",
    "train.checkpoint_dir": "a folder (\"\" = out_dir)",
    "train.checkpoint_every_steps": ">= 0 (0 = off)",
    "train.checkpoint_every_minutes": ">= 0 (0 = off)",
    "train.init_from": "path of an hm2bp checkpoint of the same arch (\"\" = random weights)",
}
# Keys with a fixed set of values are not listed: their choices are read from the validation itself
# (see _probed_choices), so a choice added in config.py shows up here without a second edit.


@dataclass(frozen=True)
class KeyDoc:
    """One key: ``model.T``, its meaning, type name, default and allowed range."""

    key: str
    meaning: str
    type: str
    default: Any
    allowed: str


_ENTRY = re.compile(r"^(\w+(?:\s*,\s*\w+)*)\s*:\s*(.*)$")
_ROLE = re.compile(r":\w+:`~?([^`]+)`")  # Sphinx roles such as :data:`DATASETS` -> DATASETS


def _attributes(cls: type) -> dict[str, str]:
    """``{field: meaning}`` from the ``Attributes:`` section of a dataclass docstring (grouped entries
    such as ``tau_m, tau_s: ...`` give each name the same text; continuation lines are joined)."""
    doc = inspect.getdoc(cls) or ""
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        m = _ENTRY.match(line.strip()) if width == indent else None
        if m:
            names = [n.strip() for n in m.group(1).split(",")]
            for n in names:
                out[n] = m.group(2).strip()
        else:
            for n in names:
                out[n] = f"{out[n]} {line.strip()}"
    return {k: _ROLE.sub(r"\1", v).replace("``", "") for k, v in out.items()}


def _probed_choices(key: str) -> str:
    """The choices of a string key, read from the error its validation gives for a value it cannot take
    ("must be one of 'a', 'b'; got ..."); "" when the key is not a choice."""
    from .config import apply_overrides
    from .errors import ConfigError

    try:
        apply_overrides(RunConfig(), [f"{key}=\x01not-a-choice"])
    except ConfigError as e:
        m = re.search(r"must be one of (.+?); got", str(e))
        if m:
            return _choices(*re.findall(r"'([^']*)'", m.group(1)))
    return ""


def _type_name(tp: Any) -> str:
    if tp == tuple[float, ...]:
        return "list of floats"
    return getattr(tp, "__name__", str(tp))


@functools.lru_cache(maxsize=1)
def key_docs() -> dict[str, KeyDoc]:
    """Every config key, in dataclass order: ``{"model.arch": KeyDoc(...), ...}`` (computed once; do not
    modify the returned dict)."""
    docs: dict[str, KeyDoc] = {}
    for section, cls in SECTIONS.items():
        meanings = _attributes(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            tp = hints[f.name]
            default = (f.default if f.default is not dataclasses.MISSING
                       else f.default_factory() if callable(f.default_factory) else None)
            allowed = RANGES.get(key) or ("true | false" if tp is bool else _probed_choices(key) if tp is str else "")
            docs[key] = KeyDoc(key, meanings.get(f.name, ""), _type_name(tp), default, allowed)
    return docs


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def format_config(cfg: RunConfig, *, width: int = 100) -> str:
    """The resolved config, one key per entry with its meaning, type, default and allowed range;
    keys that differ from the default are marked ``*``."""
    import textwrap

    values = config_to_dict(cfg)
    lines = [f"# {cfg.name}: resolved config ('*' = differs from the default)", f"name = {_show(cfg.name)}"]
    for key, doc in key_docs().items():
        section, attr = key.split(".")
        if attr == next(iter(values[section])):
            lines.append(f"\n[{section}]")
        value = values[section][attr]
        default = json.loads(_show(doc.default))
        mark = "*" if value != default else " "
        lines.append(f"{mark} {attr} = {_show(value)}")
        detail = f"{doc.type}; default {_show(doc.default)}" + (f"; allowed: {doc.allowed}" if doc.allowed else "")
        for text in (doc.meaning, detail):
            if text:
                lines += textwrap.wrap(text, width=width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines) + "\n"


def cli_value(value: Any) -> str:
    """A value as it is written on the command line (``20,8``, ``true``, ``''``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value) if value != "" else "''"


def format_key_list(*, width: int = 100) -> str:
    """Every key on one line, ``--section.key=DEFAULT  meaning`` (cut to ``width``), for ``--help``."""
    out = []
    for key, doc in key_docs().items():
        line = f"  --{key}={cli_value(doc.default)}  {doc.meaning or doc.type}"
        out.append(line if len(line) <= width else line[: width - 3].rstrip() + "...")
    return "\n".join(out)
