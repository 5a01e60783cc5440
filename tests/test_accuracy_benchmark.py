"""benchmarks/accuracy.py: every experiment resolves to a valid config; the CSV and its Markdown table."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("accuracy_bench", ROOT / "benchmarks" / "accuracy.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_every_experiment_resolves(tmp_path: Path) -> None:
    A = _module()
    a = argparse.Namespace(data_dir=str(tmp_path), out_root=str(tmp_path / "runs"), threads=1, overrides=[])
    for name, exp in A.EXPERIMENTS.items():
        cfg = A.hm2bp_config(name, exp, a, seed=3)
        assert cfg.train.mode == exp.mode and cfg.train.seed == 3, name
        if exp.mode == "online":  # the authors' procedure: no split, batch 1
            assert (cfg.train.batch_size, cfg.data.val_fraction, cfg.data.n_val) == (1, 0.0, 0)
        elif name != "protocol":
            assert cfg.data.val_fraction > 0, name  # selection on validation
    proto = A.hm2bp_config("protocol", A.EXPERIMENTS["protocol"], a, seed=0)
    assert (proto.data.n_train, proto.data.n_test, proto.model.T, proto.train.batch_size, proto.train.epochs) == (
        10000, 2000, 100, 128, 1)


def test_rows_append_under_one_header_and_make_the_table(tmp_path: Path) -> None:
    A = _module()
    path = tmp_path / "acc.csv"
    row = {"experiment": "protocol", "dataset": "mnist", "arch": "784-800-10", "T": 100, "mode": "minibatch",
           "batch": 128, "epochs": 1, "seed": 0, "val_acc": "", "test_acc": "0.9030", "train_s": "1.0",
           "library": "hm2bp", "overrides": "", "commit": "abc"}
    A.append_rows(path, [row], A.COLUMNS)
    A.append_rows(path, [{**row, "library": "snntorch", "test_acc": "0.8480", "overrides": "train.epochs=2"}],
                  A.COLUMNS)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(A.COLUMNS) and len(lines) == 3
    table = A.markdown_table(path).splitlines()
    assert len(table) == 4 and all(ln.count("|") == table[0].count("|") for ln in table)
    assert "**90.30 %**" in table[2] and "| – |" in table[2]
    assert "**84.80 %**" in table[3] and "| `train.epochs=2` |" in table[3]


def test_rows_are_refused_by_a_file_with_another_header(tmp_path: Path) -> None:
    """A CSV written before a column was added: appending would put each field under the wrong heading."""
    A = _module()
    path = tmp_path / "acc.csv"
    old = ",".join(c for c in A.COLUMNS if c != "overrides")
    path.write_text(old + "\nprotocol,mnist,784-800-10,100,minibatch,128,1,0,,0.9,1.0,hm2bp,abc\n")
    before = path.read_text()
    with pytest.raises(ValueError, match=r"acc\.csv: its header"):
        A.append_rows(path, [{"experiment": "protocol"}], A.COLUMNS)
    assert path.read_text() == before


def test_every_recipe_ablation_variant_resolves(tmp_path: Path) -> None:
    """benchmarks/recipe_ablation.py: each variant is the protocol plus its overrides, all valid keys."""
    A = _module()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("recipe_ablation", ROOT / "benchmarks" / "recipe_ablation.py")
        assert spec is not None and spec.loader is not None
        R = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(R)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    a = argparse.Namespace(data_dir=str(tmp_path), out_root=str(tmp_path / "runs"), threads=1, overrides=[])
    base = A.EXPERIMENTS["protocol"]
    for name, overrides in R.VARIANTS.items():
        exp = A.Experiment(base.preset, base.data, base.mode, base.overrides + overrides)
        cfg = A.hm2bp_config("protocol", exp, a, seed=0)
        assert (cfg.data.n_train, cfg.model.T, cfg.train.epochs) == (10000, 100, 1), name
    cfg = A.hm2bp_config("protocol", A.Experiment(base.preset, base.data, base.mode,
                                                  base.overrides + R.VARIANTS["batch=32"]), a, seed=0)
    assert (cfg.train.batch_size, cfg.train.lr) == (32, 1e-2)


def test_curve_table_takes_the_last_record_of_each_epoch(tmp_path: Path) -> None:
    import json

    A = _module()
    rec = {"lr": 1e-2, "train_acc": 0.5, "val_acc": 0.6, "test_acc": 0.7, "train_time_s": 10.0, "epoch_time_s": 12.0}
    lines = [{**rec, "epoch": 1}, {**rec, "epoch": 1, "test_acc": 0.75}, {**rec, "epoch": 2, "val_acc": None}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    rows = A.curve_table(tmp_path).splitlines()
    assert len(rows) == 4
    assert rows[2] == "| 1 | 1.00e-02 | 50.00 % | 60.00 % | 75.00 % | 10 |"
    assert rows[3] == "| 2 | 1.00e-02 | 50.00 % | – | 70.00 % | 10 |"


def test_hm2bp_row_records_the_command_line_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_hm2bp writes the overrides after ``--`` into the row (train is replaced: no training here)."""
    import types

    A = _module()
    res = types.SimpleNamespace(selected_on="val", selected_val_acc=0.5, selected_test_acc=0.25, test_acc=0.1,
                                metrics=[{"train_time_s": 2.0, "epoch_time_s": 3.0}])
    monkeypatch.setattr("hm2bp.train.train", lambda cfg, **kw: res)
    a = argparse.Namespace(data_dir=str(tmp_path), out_root=str(tmp_path / "runs"), threads=1, commit="abc", resume=False,
                           overrides=["train.epochs=3", "data.augment=true"])
    row, cfg, _ = A.run_hm2bp("mnist_cnn", A.EXPERIMENTS["mnist_cnn"], a, seed=0)
    assert cfg.train.epochs == 3 and cfg.data.augment  # both differ from the preset's mini-batch recipe
    assert row["overrides"] == "train.epochs=3 data.augment=true"
    assert (row["val_acc"], row["test_acc"], row["train_s"]) == ("0.5000", "0.2500", "2.0")
    assert set(row) == set(A.COLUMNS)
