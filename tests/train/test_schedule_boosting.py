"""Learning-rate schedule (docs/algorithm.md §4.3), data-order shuffling (§4.5) and boosting (§4.4)."""

from __future__ import annotations

import math

import pytest
import torch

from hm2bp.train.boosting import update_boost_weights
from hm2bp.train.schedule import lr_at_epoch, shuffle_order


def test_code_schedule_matches_the_logs() -> None:
    # docs/algorithm.md §4.3: epochs 0 and 1 use 1e-3; epoch e >= 1 uses 1e-3/sqrt(e); epoch 2 -> 7.07e-4, 199 -> 7.089e-5
    assert lr_at_epoch(1e-3, 0, "code") == 1e-3
    assert lr_at_epoch(1e-3, 1, "code") == 1e-3
    assert lr_at_epoch(1e-3, 2, "code") == pytest.approx(7.0711e-4, rel=1e-4)
    assert lr_at_epoch(1e-3, 4, "code") == pytest.approx(5e-4)
    assert lr_at_epoch(1e-3, 199, "code") == pytest.approx(7.089e-5, rel=1e-3)


def test_sqrt_schedule_matches_the_cnn_log() -> None:
    assert lr_at_epoch(1e-3, 0, "sqrt") == 1e-3
    assert lr_at_epoch(1e-3, 1, "sqrt") == pytest.approx(7.0711e-4, rel=1e-4)
    assert lr_at_epoch(1e-3, 199, "sqrt") == pytest.approx(7.071e-5, rel=1e-3)
    assert lr_at_epoch(2e-3, 7, "constant") == 2e-3
    with pytest.raises(ValueError):
        lr_at_epoch(1e-3, 0, "cosine")


def test_swaps_shuffle_is_n_pair_swaps_and_seeded() -> None:
    order = torch.arange(10)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = shuffle_order(order, "swaps5000", g1, n_swaps=2)
    b = shuffle_order(order, "swaps5000", g2, n_swaps=2)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(10))
    # replay the two swaps by hand
    pairs = torch.randint(0, 10, (2, 2), generator=torch.Generator().manual_seed(3)).tolist()
    ref = list(range(10))
    for i, j in pairs:
        ref[i], ref[j] = ref[j], ref[i]
    assert a.tolist() == ref
    assert torch.equal(shuffle_order(order, "none", g1), order)
    p = shuffle_order(order, "permutation", g1)
    assert sorted(p.tolist()) == list(range(10))


def test_boost_update_against_hand_computation() -> None:
    # class 0: samples 0, 1, 2 with weights 1, 2, 1; sample 1 (weight 2) wrong  -> err_0 = 2/4
    # class 1: samples 3, 4 with weights 1, 3; both wrong                      -> err_1 = 4/4
    # class 2: sample 5 correct                                                 -> err_2 = 0
    w = torch.tensor([1.0, 2.0, 1.0, 1.0, 3.0, 1.5], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 2, 0, 0, 2, 2])
    new = update_boost_weights(w, labels, preds, n_classes=3)
    expected = [1.0, 2.0 * math.exp(0.5 / 20), 1.0, 1.0 * math.exp(1.0 / 20), 3.0 * math.exp(1.0 / 20), 1.5]
    assert new.tolist() == pytest.approx(expected, rel=1e-15)
    assert w.tolist() == [1.0, 2.0, 1.0, 1.0, 3.0, 1.5]  # input untouched


def test_boost_weights_never_shrink_and_are_not_renormalised() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.ones(50, dtype=torch.float64)
    labels = torch.randint(0, 5, (50,), generator=g)
    for _ in range(5):
        preds = torch.randint(0, 5, (50,), generator=g)
        new = update_boost_weights(w, labels, preds, 5)
        assert (new >= w).all()
        assert torch.equal(new == w, preds == labels)
        w = new
    assert w.sum() > 50
