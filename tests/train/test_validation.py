"""The validation split (data.n_val / data.val_fraction): disjoint, seeded, deterministic; best.pt chosen
on validation, not test; early stopping; the summary line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hm2bp.config import load_config
from hm2bp.errors import ConfigError
from hm2bp.train import load_checkpoint, train
from hm2bp.train import loop as L
from hm2bp.train.datasets import FileSpikes, load_splits, validation_split

TINY = ["model.arch=64-20-10", "model.T=24", "model.thresholds=3,3", "model.desired=8", "model.undesired=2",
        "model.margin=1", "data.n_train=40", "data.n_test=16", "train.plots=false", "train.tensorboard=false",
        "train.threads=1", "train.mode=minibatch", "train.batch_size=8",
        "data.val_fraction=0"]  # the digits preset holds out 10 %; these tests set their own split


def test_split_is_disjoint_complete_sorted_and_seeded() -> None:
    tr, val = validation_split(1000, 123, seed=0)
    assert len(val) == 123 and len(tr) == 877
    assert not set(tr.tolist()) & set(val.tolist())
    assert sorted(tr.tolist() + val.tolist()) == list(range(1000))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(val) > 0)
    tr2, val2 = validation_split(1000, 123, seed=0)
    assert np.array_equal(val, val2) and np.array_equal(tr, tr2)
    _, val3 = validation_split(1000, 123, seed=1)
    assert not np.array_equal(val, val3)
    assert val.max() > 900 and val.min() < 100  # drawn from the whole pool, not its tail


@pytest.mark.requires("sklearn")
def test_digits_splits_hold_out_the_right_images_and_ignore_train_seed() -> None:
    pool = load_splits(load_config("digits", TINY))
    assert pool.val is None and len(pool.train) == 40
    s = load_splits(load_config("digits", TINY + ["data.n_val=10"]))
    assert s.val is not None and len(s.val) == 10 and len(s.train) == 30 and len(s.test) == 16
    tr_idx, val_idx = validation_split(40, 10, seed=0)
    assert torch.equal(s.val.images, pool.train.images[torch.as_tensor(val_idx)])  # type: ignore[attr-defined]
    assert torch.equal(s.train.images, pool.train.images[torch.as_tensor(tr_idx)])  # type: ignore[attr-defined]
    assert torch.equal(s.val.labels, pool.train.labels[torch.as_tensor(val_idx)])
    # the same split for another train.seed (every seed of an experiment sees the same validation images)
    other = load_splits(load_config("digits", TINY + ["data.n_val=10", "train.seed=5"]))
    assert torch.equal(other.val.images, s.val.images)  # type: ignore[union-attr, attr-defined]
    frac = load_splits(load_config("digits", TINY + ["data.val_fraction=0.25"]))
    assert frac.val is not None and torch.equal(frac.val.labels, s.val.labels)  # round(0.25 * 40) = 10


@pytest.mark.requires("sklearn")
def test_validation_rasters_are_fixed_even_when_training_rasters_are_fresh() -> None:
    s = load_splits(load_config("digits", TINY + ["data.n_val=10", "data.augment=true"]))
    assert s.val is not None
    assert torch.equal(s.val.get([0, 3], epoch=0), s.val.get([0, 3], epoch=4))
    assert not torch.equal(s.train.get([0, 3], epoch=0), s.train.get([0, 3], epoch=4))


def test_file_datasets_split_by_path() -> None:
    paths = [Path(f"/nowhere/{i}.bin") for i in range(20)]
    ds = FileSpikes(paths, [i % 10 for i in range(20)], 10, 3, 4,
                    lambda p: np.full((4, 3), int(p.stem) % 2, dtype=bool), name="fake")
    _, val_idx = validation_split(20, 5, seed=0)
    val = ds.subset(val_idx, "val")
    assert val.paths == [paths[i] for i in val_idx]  # type: ignore[attr-defined]
    assert val.labels.tolist() == [int(i) % 10 for i in val_idx]
    assert torch.equal(val.get([1]), ds.get([int(val_idx[1])]))


def test_an_override_of_one_validation_size_clears_the_other(tmp_path: Path) -> None:
    assert load_config("digits", TINY + ["data.val_fraction=0.1", "data.n_val=5"]).data.val_fraction == 0
    assert load_config("digits", TINY + ["data.n_val=5", "data.val_fraction=0.1"]).data.n_val == 0
    p = tmp_path / "both.toml"
    p.write_text("[data]\nn_val = 5\nval_fraction = 0.1\n")
    with pytest.raises(ConfigError, match="either data.n_val or data.val_fraction"):
        load_config(p)


@pytest.mark.parametrize("bad, match", [
    (["train.early_stop_patience=2"], "needs a validation split"),
    (["data.val_fraction=1.0"], "val_fraction"),
    (["data.n_val=-1"], "n_val"),
])
def test_config_errors_name_the_key(bad: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config("digits", TINY + bad)


@pytest.mark.requires("sklearn")
def test_whole_pool_as_validation_is_refused() -> None:
    with pytest.raises(ConfigError, match="data.n_val.*at least one"):
        load_splits(load_config("digits", TINY + ["data.n_val=40"]))


def _scripted_evaluation(monkeypatch: pytest.MonkeyPatch, val: list[float], test: list[float]) -> None:
    """Replace the evaluation by scripted accuracies: validation and test disagree on the best epoch."""
    calls = {"val": 0, "test": 0}

    def fake(model, dataset, ctx, batch_size, device, epoch, **kw):  # type: ignore[no-untyped-def]
        which = "val" if getattr(dataset, "split", "") == "val" else "test"
        acc = (val if which == "val" else test)[calls[which]]
        calls[which] += 1
        # 20 scripted samples of class 0, the first round(20 acc) of them predicted right (all-zero counts)
        counts = torch.zeros(20, dataset.n_classes)
        counts[round(20 * acc):, 1] = 1.0
        return L.EvalResult(counts, torch.zeros(20, dtype=torch.int64))

    monkeypatch.setattr(L, "_evaluate_all", fake)


@pytest.mark.requires("sklearn")
def test_best_checkpoint_is_chosen_on_validation_not_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted_evaluation(monkeypatch, val=[0.5, 0.7, 0.6, 0.6], test=[0.9, 0.6, 0.8, 0.95])
    lines: list[str] = []
    res = train(load_config("digits", TINY + ["data.n_val=10", "train.epochs=4", f"train.out_dir={tmp_path}"]),
                echo=lines.append)
    assert (res.selected_on, res.selected_epoch, res.selected_test_acc, res.selected_val_acc) == ("val", 2, 0.6, 0.7)
    assert res.test_acc == 0.95 and res.best_test_acc == 0.95 and not res.stopped_early
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2  # written after epoch 2
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4
    assert res.metrics[-1]["selected_epoch"] == 2 and res.metrics[-1]["val_acc"] == 0.6
    assert lines[-1] == ("summary: best.pt = epoch 2 chosen on validation (val 70.00%): test 60.00%; "
                         "last epoch 4: val 60.00%, test 95.00%")


@pytest.mark.requires("sklearn")
def test_without_validation_the_summary_says_test_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted_evaluation(monkeypatch, val=[], test=[0.4, 0.8, 0.7])
    lines: list[str] = []
    res = train(load_config("digits", TINY + ["train.epochs=3", f"train.out_dir={tmp_path}"]), echo=lines.append)
    assert (res.selected_on, res.selected_epoch, res.val_acc) == ("test", 2, None)
    assert "chosen on the TEST set (no validation split" in lines[-1] and lines[-1].endswith("test 70.00%")


@pytest.mark.requires("sklearn")
def test_early_stopping_on_validation_and_after_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted_evaluation(monkeypatch, val=[0.5, 0.7, 0.6, 0.6, 0.9], test=[0.1] * 5)
    over = TINY + ["data.n_val=10", "train.epochs=5", "train.early_stop_patience=2", f"train.out_dir={tmp_path}"]
    lines: list[str] = []
    res = train(load_config("digits", over), echo=lines.append)
    assert len(res.metrics) == 4 and res.stopped_early and res.selected_epoch == 2
    assert lines[-1].endswith(", stopped early")
    again = train(load_config("digits", over), resume=True, quiet=True)  # nothing left to do after the stop
    assert len(again.metrics) == 4 and again.stopped_early
