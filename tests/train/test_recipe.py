"""The mini-batch recipe: every preset's [minibatch] table applies in mini-batch mode only, below the
command-line overrides; the per-update learning rate (cosine, warm-up)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hm2bp.config import (
    RECIPE_SECTION,
    config_to_dict,
    list_presets,
    load_config,
    preset_path,
)
from hm2bp.errors import ConfigError
from hm2bp.train.schedule import lr_at_epoch, lr_at_step, per_step_schedule

FC_PRESETS = ["mnist_fc", "emnist_fc", "nmnist_fc", "fsdd", "ti46", "mnist_cnn"]


def _without_recipe(name: str, tmp_path: Path) -> Path:
    """The preset's TOML with its [minibatch…] tables cut off (they come last in every preset)."""
    text = preset_path(name).read_text()
    cut = text.find(f"[{RECIPE_SECTION}.")
    out = tmp_path / f"{name}.toml"
    out.write_text(text if cut < 0 else text[:cut])
    return out


@pytest.mark.parametrize("name", FC_PRESETS)
def test_every_preset_has_a_minibatch_recipe_that_online_runs_ignore(name: str, tmp_path: Path) -> None:
    assert f"[{RECIPE_SECTION}.train]" in preset_path(name).read_text(), name
    default = load_config(name)
    mb = load_config(name, ["train.mode=minibatch"])
    assert mb.train.mode == "minibatch" and mb.train.batch_size > 1
    assert mb.data.val_fraction > 0 or mb.data.n_val > 0  # selection on validation, not test
    if default.train.mode == "online":  # the exact online mode stays the authors' procedure, untouched
        plain = load_config(_without_recipe(name, tmp_path))
        for section in ("model", "data", "train"):
            assert config_to_dict(default)[section] == config_to_dict(plain)[section]
        assert (default.train.batch_size, default.data.n_val, default.data.val_fraction) == (1, 0, 0.0)
        assert default.train.early_stop_patience == 0
    else:
        assert mb == default


def test_command_line_overrides_beat_the_recipe() -> None:
    assert load_config("mnist_fc", ["train.mode=minibatch"]).data.val_fraction > 0
    cfg = load_config("mnist_fc", ["train.mode=minibatch", "train.lr=3e-4", "train.batch_size=7", "data.n_val=0"])
    assert (cfg.train.lr, cfg.train.batch_size, cfg.data.val_fraction, cfg.data.n_val) == (3e-4, 7, 0.0, 0)


def test_recipe_also_applies_when_the_file_says_minibatch(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text('[train]\nmode = "minibatch"\nbatch_size = 4\n[minibatch.train]\nlr = 0.5\n')
    assert load_config(p).train.lr == 0.5
    assert load_config(p, ["train.mode=online", "train.batch_size=1"]).train.lr == 1e-3  # default, recipe ignored


def test_bad_recipe_table_names_the_key(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text('[minibatch.optim]\nlr = 0.5\n')
    with pytest.raises(ConfigError, match=r"\[minibatch\] must hold only"):
        load_config(p, ["train.mode=minibatch", "train.batch_size=2"])
    p.write_text('[train]\nmode = "minibatch"\nbatch_size = 4\n[minibatch.train]\nspeed = 0.5\n')
    with pytest.raises(ConfigError, match="train.speed"):
        load_config(p)


def test_cosine_schedule_and_warmup() -> None:
    assert lr_at_step(0.01, 0, 0, 100, "cosine") == 0.01
    assert math.isclose(lr_at_step(0.01, 0, 50, 100, "cosine"), 0.005)
    assert lr_at_step(0.01, 3, 100, 100, "cosine") < 1e-12
    assert math.isclose(lr_at_step(0.01, 0, 0, 100, "cosine", warmup_steps=4), 0.0025)
    assert math.isclose(lr_at_step(1e-3, 2, 500, 1000, "code"), lr_at_epoch(1e-3, 2, "code"))
    assert per_step_schedule("cosine", 0) and per_step_schedule("code", 3) and not per_step_schedule("code", 0)
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        load_config("digits", ["train.lr_schedule=linear"])


def test_presets_load_in_both_modes() -> None:
    for name in list_presets():
        load_config(name, ["train.mode=minibatch", "train.batch_size=2"])


def test_cosine_run_logs_its_rates(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from hm2bp.train import train

    over = ["model.arch=64-20-10", "model.T=24", "model.thresholds=3,3", "model.desired=8", "model.undesired=2",
            "model.margin=1", "data.n_train=24", "data.n_test=16", "train.plots=false", "train.tensorboard=false",
            "train.threads=1", "train.mode=minibatch", "train.batch_size=5", "train.lr=0.01", "train.lr_schedule=cosine", "train.warmup_steps=3", "train.epochs=2"]
    res = train(load_config("digits", [*over, f"train.out_dir={tmp_path}"]), quiet=True)
    steps = res.metrics[0]["step"]  # updates per epoch (24 samples, batch 5: 5)
    assert steps == 5 and res.metrics[1]["step"] == 10
    # a record holds the rate of the epoch's last update
    assert res.metrics[0]["lr"] == pytest.approx(lr_at_step(0.01, 0, 4, 10, "cosine", 3))
    assert res.metrics[1]["lr"] == pytest.approx(lr_at_step(0.01, 1, 9, 10, "cosine", 3))
    assert 0 < res.metrics[1]["lr"] < res.metrics[0]["lr"] < 0.01
