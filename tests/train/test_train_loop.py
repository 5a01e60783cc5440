"""Training loop on tiny real data (scikit-learn digits): resume equality, learning, evaluation, datasets."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hm2bp.config import load_config
from hm2bp.errors import ConfigError
from hm2bp.train import build_model, evaluate, load_checkpoint, model_from_checkpoint, train
from hm2bp.train.datasets import load_datasets

TINY = ["model.arch=64-20-10", "model.T=24", "model.thresholds=3,3", "model.desired=8", "model.undesired=2",
        "model.margin=1", "data.n_train=24", "data.n_test=16", "train.plots=false", "train.tensorboard=false",
        "train.threads=1"]
ONLINE = TINY + ["data.n_train=12", "train.mode=online", "train.batch_size=1", "train.shuffle=swaps5000",
                 "train.n_swaps=7", "train.reg_lambda=10", "train.reg_beta=0.04", "train.boosting=true"]
MINIBATCH = TINY + ["train.mode=minibatch", "train.batch_size=5", "data.encoding=fresh",
                    "train.shuffle=permutation", "train.optimizer=sgd", "train.lr=0.01"]

_TIME_KEYS = {"epoch_time_s", "train_time_s", "wall_time_s"}


def _strip_times(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in _TIME_KEYS} for m in metrics]


def _assert_same_checkpoint(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for p in sa:
        for k in sa[p]:
            va, vb = sa[p][k], sb[p][k]
            assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, (p, k)
    assert torch.equal(a["boost"], b["boost"])
    assert torch.equal(a["order"], b["order"])
    assert torch.equal(a["rng"]["shuffle"], b["rng"]["shuffle"])
    assert (a["epoch"], a["step"], a["best"]) == (b["epoch"], b["step"], b["best"])
    assert _strip_times(a["metrics"]) == _strip_times(b["metrics"])


@pytest.mark.requires("sklearn")
@pytest.mark.parametrize("overrides", [ONLINE, MINIBATCH], ids=["online", "minibatch"])
def test_resume_gives_exactly_the_uninterrupted_run(tmp_path: Path, overrides: list[str]) -> None:
    straight = train(load_config("digits", overrides + ["train.epochs=2", f"train.out_dir={tmp_path / 'a'}"]),
                     quiet=True)
    train(load_config("digits", overrides + ["train.epochs=1", f"train.out_dir={tmp_path / 'b'}"]), quiet=True)
    resumed = train(load_config("digits", overrides + ["train.epochs=2", f"train.out_dir={tmp_path / 'b'}"]),
                    resume=True, quiet=True)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    _assert_same_checkpoint(a, b)
    assert straight.test_acc == resumed.test_acc
    # the metrics log of the resumed run holds each epoch once, equal to the straight run's
    la = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert _strip_times(la) == _strip_times(lb) and [m["epoch"] for m in lb] == [1, 2]


@pytest.mark.requires("sklearn")
def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    base = ONLINE + ["train.epochs=1", f"train.out_dir={tmp_path}"]
    train(load_config("digits", base), quiet=True)
    with pytest.raises(ConfigError, match=r"train.lr"):
        train(load_config("digits", base + ["train.lr=0.5"]), resume=True, quiet=True)


@pytest.mark.requires("sklearn")
def test_run_folder_contents_and_best_checkpoint(tmp_path: Path) -> None:
    res = train(load_config("digits", MINIBATCH + ["train.epochs=2", f"train.out_dir={tmp_path}"]), quiet=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "metrics.jsonl", "last.pt", "best.pt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert {"epoch", "lr", "train_loss", "train_acc", "test_acc", "best_test_acc", "wall_time_s"} <= set(m)
    assert metrics[-1]["best_test_acc"] == max(m["test_acc"] for m in metrics) == res.best_test_acc
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["metrics"][-1]["test_acc"] == res.best_test_acc
    # the best checkpoint evaluates to the accuracy recorded for it
    model, cfg, _ = model_from_checkpoint(tmp_path / "best.pt")
    _, test_set = load_datasets(cfg)
    assert evaluate(model, test_set).accuracy == res.best_test_acc


@pytest.mark.requires("sklearn")
def test_seeded_runs_are_reproducible_and_seed_matters(tmp_path: Path) -> None:
    over = MINIBATCH + ["train.epochs=1"]
    r1 = train(load_config("digits", over + [f"train.out_dir={tmp_path / '1'}"]), quiet=True)
    r2 = train(load_config("digits", over + [f"train.out_dir={tmp_path / '2'}"]), quiet=True)
    r3 = train(load_config("digits", over + [f"train.out_dir={tmp_path / '3'}", "train.seed=1"]), quiet=True)
    w1, w2, w3 = (r.model.layers[0].weight for r in (r1, r2, r3))
    assert torch.equal(w1, w2) and not torch.equal(w1, w3)


@pytest.mark.requires("sklearn")
def test_loss_decreases_and_learns_on_a_small_real_subset(tmp_path: Path) -> None:
    over = ["model.arch=64-50-10", "model.T=60", "model.thresholds=2,5", "model.desired=15", "model.undesired=3",
            "model.margin=3", "data.n_train=300", "data.n_test=100", "train.mode=minibatch", "train.batch_size=16",
            "train.lr=0.01", "train.epochs=4", "train.plots=false", "train.tensorboard=false", "train.threads=1",
            f"train.out_dir={tmp_path}"]
    res = train(load_config("digits", over), quiet=True)
    losses = [m["train_loss"] for m in res.metrics]
    assert losses[-1] < 0.6 * losses[0], losses
    # the authors' logged cost: no ½, and a silent label neuron counts its inserted spikes (no cost then)
    costs = [m["train_cost_as_logged"] for m in res.metrics]
    assert all(0 < c <= 2 * loss + 1e-9 for c, loss in zip(costs, losses)), (costs, losses)
    assert costs[0] < 2 * losses[0]  # the first epoch has silent label neurons
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert all(m["skipped_steps"] == 0 for m in res.metrics)
    assert res.best_test_acc > 0.4  # chance is 0.1


@pytest.mark.requires("sklearn")
def test_fixed_rasters_repeat_and_fresh_rasters_change() -> None:
    fixed_train, _ = load_datasets(load_config("digits", TINY))
    assert torch.equal(fixed_train.get([3, 1], 0), fixed_train.get([3, 1], 5))
    # a sample's raster does not depend on the batch it is drawn with
    assert torch.equal(fixed_train.get([3, 1], 0)[:, 1], fixed_train.get([1], 0)[:, 0])
    x = fixed_train.get([0, 1, 2], 0)
    assert x.dtype == torch.bool and x.shape == (24, 3, 64) and not x[0].any()
    fresh_train, fresh_test = load_datasets(load_config("digits", TINY + ["data.encoding=fresh"]))
    assert torch.equal(fresh_train.get([2], 1), fresh_train.get([2], 1))
    assert not torch.equal(fresh_train.get([2], 1), fresh_train.get([2], 2))
    assert torch.equal(fresh_test.get([2], 1), fresh_test.get([2], 2))  # test rasters stay fixed


@pytest.mark.requires("sklearn")
def test_fixed_rasters_are_the_same_from_the_packed_cache_or_encoded_again() -> None:
    # budget 0: never cached; 0.001 MiB: a few samples (each raster packs into 24·64/8 = 192 bytes); default: all
    loaded = [load_datasets(load_config("digits", TINY + [f"data.cache_mb={mb}"]))[0] for mb in (0, 0.001, 1024)]
    batches = [[3, 1, 4], [1, 5, 9, 2, 6], [3, 5, 8, 9, 7, 9]]  # repeats, within and across batches
    for ds in loaded:
        for idx in batches:
            assert torch.equal(ds.get(idx, 0), loaded[0].get(idx, 0))
    assert len(loaded[0]._cache.store) == 0
    assert 0 < len(loaded[1]._cache.store) < len(loaded[2]._cache.store) == 9


@pytest.mark.requires("sklearn")
def test_augmented_rasters_change_per_epoch() -> None:
    train_set, _ = load_datasets(load_config("digits", TINY + ["data.augment=true"]))
    a, b = train_set.get([0, 1], 0), train_set.get([0, 1], 1)
    assert a.shape == b.shape and not torch.equal(a, b)
    assert torch.equal(a, train_set.get([0, 1], 0))


@pytest.mark.requires("sklearn")
def test_digits_split_is_fixed_and_disjoint() -> None:
    from hm2bp.data.digits import load_digits

    xa, ya = load_digits("train")
    xb, _ = load_digits("test")
    assert xa.shape == (1437, 8, 8) and xb.shape == (360, 8, 8) and xa.dtype.name == "uint8"
    assert xa.max() == 255 and xa.min() == 0
    assert set(ya.tolist()) == set(range(10))
    x2, _ = load_digits("train")
    assert (x2 == xa).all()
    rows_a = {r.tobytes() for r in xa}
    assert sum(r.tobytes() in rows_a for r in xb) < 10  # (a few digits images are exact duplicates)


def test_cuda_device_error_is_clear() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    from hm2bp.train import resolve_device

    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def _write_cochleagram(path: Path, rng: np.random.Generator, frames: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = rng.uniform(0, 6e-4, size=(78, frames))
    path.write_text("\n".join(" ".join(f"{v:.6e}" for v in row) for row in a) + "\n")


def test_ti46_layout_with_preprocessed_cochleagrams_trains(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for label in ("0", "1"):
            for k in range(n):
                _write_cochleagram(tmp_path / "ti46" / split / label / f"u{k}.dat", rng)
    over = [f"data.data_dir={tmp_path / 'ti46'}", "model.arch=78-12-2", "model.thresholds=3,3", "model.T=130",
            "model.desired=10", "model.undesired=2", "model.margin=1", "train.epochs=1", "train.plots=false",
            "train.tensorboard=false", f"train.out_dir={tmp_path / 'run'}", "train.threads=1"]
    cfg = load_config("ti46", over)
    tr, te = load_datasets(cfg)
    assert (len(tr), len(te), tr.n_classes, tr.n_inputs) == (6, 4, 2, 78)
    x = tr.get([0, 1])
    assert x.shape == (130, 2, 78) and x.dtype == torch.bool and x.any()
    assert torch.equal(x, tr.get([0, 1]))  # deterministic (and served from the cache the second time)
    res = train(cfg, quiet=True)
    assert res.metrics[0]["epoch"] == 1 and 0.0 <= res.test_acc <= 1.0
    # the reported accuracy is the trained model's on the whole test set, and the epoch's record says the same
    again = evaluate(res.model, te)
    assert again.total == 4 and res.test_acc == again.accuracy == res.metrics[-1]["test_acc"]
    # and the one epoch did train: the weights moved away from the same seed's initial ones
    start = build_model(cfg)
    assert all(not torch.equal(a, b) for a, b in zip(start.parameters(), res.model.parameters()))
    with pytest.raises(ConfigError, match="2 classes"):
        load_datasets(load_config("ti46", [f"data.data_dir={tmp_path / 'ti46'}"]))


def test_missing_data_dir_names_the_files(tmp_path: Path) -> None:
    from hm2bp.errors import DataFormatError

    with pytest.raises(ConfigError, match="--data-dir"):
        load_datasets(load_config("nmnist_fc"))
    with pytest.raises(DataFormatError, match="Train/<digit>"):
        load_datasets(load_config("nmnist_fc", [f"data.data_dir={tmp_path}"]))
    with pytest.raises(DataFormatError, match="not found"):
        load_datasets(load_config("fsdd", [f"data.data_dir={tmp_path / 'nope'}"]))


@pytest.mark.requires("sklearn")
def test_init_from_starts_from_the_checkpoint_weights_with_a_fresh_optimizer(tmp_path: Path) -> None:
    first = MINIBATCH + ["train.optimizer=adam", "train.lr=0.01", "train.lr_schedule=cosine"]
    train(load_config("digits", first + ["train.epochs=2", f"train.out_dir={tmp_path / 'a'}"]), quiet=True)
    src = load_checkpoint(tmp_path / "a" / "last.pt")
    # the trainer's starting point: the source's weights, an empty optimizer state, no history
    from hm2bp.train.loop import Trainer
    from hm2bp.train.user_datasets import resolve_datasets

    cfg = load_config("digits", first + [f"train.init_from={tmp_path / 'a' / 'last.pt'}",
                                         f"train.out_dir={tmp_path / 'b'}"])
    train_set, val_set, test_set = resolve_datasets(cfg, None)
    tr = Trainer(cfg, torch.device("cpu"), train_set, test_set, val_set=val_set)
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, src["model"][k]), k
    assert tr.opt.state_dict()["state"] == {} and tr.st.epoch == 0 and tr.st.step == 0
    from hm2bp.train.plan import format_plan, make_plan

    plan = make_plan(cfg, timing_steps=0)
    assert plan.init_epochs == 2 and "after 2 epochs of its run" in format_plan(cfg, plan)
    # a whole run from it: 1 epoch, its own fresh history, and weights that moved from the source's
    res = train(load_config("digits", first + ["train.epochs=1", f"train.init_from={tmp_path / 'a' / 'last.pt'}",
                                               f"train.out_dir={tmp_path / 'c'}"]), quiet=True)
    c = load_checkpoint(tmp_path / "c" / "last.pt")
    assert c["epoch"] == 1 and [m["epoch"] for m in res.metrics] == [1]
    assert any(not torch.equal(c["model"][k], src["model"][k]) for k in src["model"])


@pytest.mark.requires("sklearn")
def test_init_from_refuses_a_missing_file_or_another_architecture(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.init_from: no checkpoint file at .*nope.pt"):
        train(load_config("digits", MINIBATCH + [f"train.init_from={tmp_path / 'nope.pt'}",
                                                 f"train.out_dir={tmp_path / 'x'}"]), quiet=True)
    train(load_config("digits", MINIBATCH + ["train.epochs=1", f"train.out_dir={tmp_path / 'a'}"]), quiet=True)
    other = [o for o in MINIBATCH if not o.startswith("model.arch")] + ["model.arch=64-30-10"]
    with pytest.raises(ConfigError, match=r"train.init_from: .*last.pt holds a network of architecture '64-20-10'"):
        train(load_config("digits", other + [f"train.init_from={tmp_path / 'a' / 'last.pt'}",
                                             f"train.out_dir={tmp_path / 'b'}"]), quiet=True)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"train.init_from: .*junk.pt"):
        train(load_config("digits", MINIBATCH + [f"train.init_from={tmp_path / 'junk.pt'}",
                                                 f"train.out_dir={tmp_path / 'c'}"]), quiet=True)
    # its own folder: refused before --overwrite could delete the very checkpoint it starts from
    with pytest.raises(ConfigError, match=r"train.init_from: .* lies in this run's own checkpoint folder"):
        train(load_config("digits", MINIBATCH + [f"train.init_from={tmp_path / 'a' / 'last.pt'}",
                                                 f"train.out_dir={tmp_path / 'a'}"]), overwrite=True, quiet=True)
    assert (tmp_path / "a" / "last.pt").is_file()
    assert not (tmp_path / "b" / "last.pt").exists() and not (tmp_path / "c" / "last.pt").exists()
