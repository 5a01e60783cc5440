"""Config: presets, TOML parsing, dotted overrides, validation errors, config.json round trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hm2bp.config import (
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
    write_config_json,
)
from hm2bp.errors import ConfigError

PRESETS = ["digits", "emnist_fc", "fsdd", "mnist_cnn", "mnist_fc", "nmnist_fc", "ti46"]


def test_all_presets_are_bundled_and_valid() -> None:
    assert set(PRESETS) <= set(list_presets())
    for name in list_presets():
        cfg = load_config(name)
        assert cfg.name == name


def test_presets_hold_the_spec_values() -> None:
    fc = load_config("mnist_fc")
    assert (fc.model.arch, fc.model.thresholds, fc.model.T) == ("784-800-10", (20.0, 8.0), 400)
    assert (fc.train.reg_lambda, fc.train.reg_beta, fc.train.reg_limit) == (10.0, 0.04, 8.0)
    assert (fc.train.mode, fc.train.batch_size, fc.train.optimizer, fc.train.boosting) == ("online", 1, "adam", True)
    assert (fc.model.desired, fc.model.undesired, fc.model.margin) == (35, 5, 5.0)
    assert fc.train.shuffle == "swaps5000" and fc.data.encoding == "fixed" and not fc.data.augment
    cnn = load_config("mnist_cnn")
    assert cnn.model.arch == "28x28-15c5-p2-40c5-p2-300-10"
    assert cnn.model.thresholds == (5.0, 2.0, 12.0, 4.0, 10.0, 10.0)
    assert cnn.data.augment and cnn.train.reg_lambda == 0.0 and cnn.model.T == 400
    nm = load_config("nmnist_fc")
    assert (nm.model.arch, nm.model.thresholds, nm.model.T) == ("2312-800-10", (15.0, 15.0), 540)
    assert (nm.train.reg_lambda, nm.train.reg_beta) == (10.0, 0.01)
    assert load_config("emnist_fc").model.arch == "784-800-800-47"
    assert load_config("ti46").model.arch == "78-800-800-26"
    assert load_config("digits").data.dataset == "digits"


def test_default_source_is_digits() -> None:
    assert load_config().name == "digits"


def test_dotted_overrides_are_cast_by_type() -> None:
    cfg = load_config("mnist_fc", ["train.lr=5e-4", "model.T=50", "train.boosting=false", "model.thresholds=10,4",
                                   "data.data_dir=/x", "name=foo", "train.mode=minibatch", "train.batch_size=8"])
    assert cfg.train.lr == 5e-4 and isinstance(cfg.train.lr, float)
    assert cfg.model.T == 50 and cfg.train.boosting is False
    assert cfg.model.thresholds == (10.0, 4.0)
    assert cfg.data.data_dir == "/x" and cfg.name == "foo"
    assert load_config("mnist_fc", ["model.thresholds=[1, 2]"]).model.thresholds == (1.0, 2.0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.nope=1", "unknown key"),
        ("nosection.lr=1", "unknown key"),
        ("train.lr=fast", "cannot read 'fast' as float"),
        ("train.epochs=2.5", "cannot read '2.5' as int"),
        ("train.boosting=maybe", "as bool"),
        ("train.lr=-1", "train.lr: must be > 0"),
        ("train.lr=nan", "train.lr"),
        ("train.optimizer=rmsprop", "train.optimizer: must be one of"),
        ("train.batch_size=4", "online mode"),
        ("model.thresholds=20", "needs 2 thresholds"),
        ("model.arch=784-800-q", "model.arch"),
        ("model.desired=3", "undesired < desired"),
        ("model.T=1", "model.T"),
        ("train.device=tpu", "train.device"),
        ("data.dataset=cifar", "data.dataset"),
        ("train.lr", "section.key=value"),
    ],
)
def test_bad_overrides_raise_config_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("mnist_fc", [override])


def test_toml_file_unknown_key_and_wrong_type(tmp_path: Path) -> None:
    p = tmp_path / "mine.toml"
    p.write_text('[model]\narch = "784-800-10"\nthresholds = [20, 8]\nspeed = 3\n')
    with pytest.raises(ConfigError, match=r"mine.toml.*unknown key\(s\) model.speed"):
        load_config(p)
    p.write_text('[train]\nepochs = "ten"\n')
    with pytest.raises(ConfigError, match=r"train.epochs: expected int"):
        load_config(p)
    p.write_text('[train]\nboosting = 1\n')
    with pytest.raises(ConfigError, match=r"train.boosting: expected bool"):
        load_config(p)
    p.write_text('[oops]\nx = 1\n')
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load_config(p)
    p.write_text("[train\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)


def test_toml_file_name_defaults_to_stem_and_ints_become_floats(tmp_path: Path) -> None:
    p = tmp_path / "exp1.toml"
    p.write_text('[train]\nlr = 1\nepochs = 3\n')
    cfg = load_config(p)
    assert cfg.name == "exp1" and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_unknown_preset_and_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'nosuch'.*digits"):
        load_config("nosuch")
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/dir/x.toml")


def test_configs_are_frozen() -> None:
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_config_json_round_trip(tmp_path: Path) -> None:
    cfg = apply_overrides(load_config("mnist_cnn"), ["train.seed=7"])
    write_config_json(cfg, tmp_path / "config.json")
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["model"]["thresholds"] == [5.0, 2.0, 12.0, 4.0, 10.0, 10.0]
    assert config_from_dict(d) == cfg
    assert config_to_dict(cfg) == d
    assert load_config(tmp_path / "config.json") == cfg  # a run's config.json repeats the run


def test_digits_input_size_is_checked() -> None:
    with pytest.raises(ConfigError, match="64 pixels"):
        load_config("digits", ["model.arch=784-10", "model.thresholds=5"])
