"""Per-class sampling (lib.datasets.sampling): n-shot samples, validation sets, stratified
subsets."""

from __future__ import annotations

import pytest
import torch

from lib.datasets.sampling import (
    draw_splits,
    n_shot_indices,
    per_class_counts,
    stratified_subset,
    train_val_split,
)


def _labels() -> torch.Tensor:
    # Unequal class sizes (20, 35, 50), shuffled.
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate((20, 35, 50))])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def test_n_shot_counts_determinism_and_nesting() -> None:
    labels = _labels()
    five = n_shot_indices(labels, 5, seed=7)
    assert torch.bincount(labels[five]).tolist() == [5, 5, 5]
    assert len(five.unique()) == 15 and torch.equal(five, five.sort().values)
    assert torch.equal(five, n_shot_indices(labels, 5, seed=7))
    assert not torch.equal(five, n_shot_indices(labels, 5, seed=8))
    twenty = n_shot_indices(labels, 20, seed=7)
    assert set(five.tolist()) <= set(twenty.tolist())
    assert torch.equal(n_shot_indices(labels, -1, seed=7), torch.arange(len(labels)))
    assert torch.equal(n_shot_indices(labels.tolist(), 5, seed=7), five)


@pytest.mark.parametrize("n_shot", [0, -2, -5])
def test_n_shot_rejects_non_positive(n_shot: int) -> None:
    with pytest.raises(ValueError, match=f"n_shot={n_shot}"):
        n_shot_indices(_labels(), n_shot, seed=0)


def test_n_shot_larger_than_smallest_class() -> None:
    with pytest.raises(ValueError, match=r"n_shot=21 .* smallest class size 20"):
        n_shot_indices(_labels(), 21, seed=0)


def test_train_val_split_is_stratified_and_disjoint() -> None:
    labels = _labels()
    train, val = train_val_split(labels, 0.1, seed=3)
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    assert torch.bincount(labels[val]).tolist() == [2, 4, 5]  # round(0.1 * n), >= 1 each
    again = train_val_split(labels, 0.1, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    assert not torch.equal(train_val_split(labels, 0.1, seed=4)[1], val)
    tiny_train, tiny_val = train_val_split(labels, 0.001, seed=3)
    assert torch.bincount(labels[tiny_val]).tolist() == [1, 1, 1]
    assert torch.bincount(labels[tiny_train]).min() >= 19


def test_train_val_split_errors() -> None:
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        train_val_split(_labels(), 1.5, seed=0)
    with pytest.raises(ValueError, match="class 1 has 1 sample"):
        train_val_split(torch.tensor([0, 0, 1, 2, 2]), 0.5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        train_val_split(_labels(), 0.1, seed=-1)


def test_n_shot_at_most_takes_what_a_short_class_has() -> None:
    labels = _labels()  # class sizes 20, 35, 50
    picked = n_shot_indices(labels, 30, seed=1, policy="at_most")
    assert torch.bincount(labels[picked]).tolist() == [20, 30, 30]
    assert set(n_shot_indices(labels, 10, seed=1, policy="at_most").tolist()) <= set(
        picked.tolist()
    )
    with pytest.raises(ValueError, match="n_shot_policy 'at_most'"):
        n_shot_indices(labels, 30, seed=1, policy="strict")
    with pytest.raises(ValueError, match="unknown n_shot_policy 'some'; choose one of: strict"):
        n_shot_indices(labels, 3, seed=1, policy="some")


def test_few_shot_validation_is_outside_the_sample_and_at_most_n_per_class() -> None:
    labels = _labels()
    splits = draw_splits(labels, 10, seed=2, selection="val")
    assert torch.bincount(labels[splits.train]).tolist() == [10, 10, 10]
    assert per_class_counts(labels, splits.val, 3) == [10, 10, 10]
    assert not set(splits.train.tolist()) & set(splits.val.tolist())
    # the training sample is the plain n-shot sample: nested across n, whatever the selection
    assert torch.equal(splits.train, n_shot_indices(labels, 10, seed=2))
    coop = draw_splits(labels, 10, seed=2, selection="val", val_shots="coop")
    assert per_class_counts(labels, coop.val, 3) == [4, 4, 4]  # CoOp: min(n, 4)
    # a class with fewer than 2n images gives what is left; one with <= n gives none
    short = draw_splits(labels, 18, seed=2, policy="at_most")
    assert per_class_counts(labels, short.val, 3) == [2, 17, 18]
    none_left = draw_splits(labels, 25, seed=2, policy="at_most")
    assert per_class_counts(labels, none_left.val, 3) == [0, 10, 25]
    capped = draw_splits(labels, 10, seed=2, max_val=7)
    assert len(capped.val) == 7 and set(capped.val.tolist()) <= set(splits.val.tolist())


def test_validation_that_cannot_exist_is_refused_before_compute() -> None:
    labels = torch.tensor([0] * 5 + [1] * 5)
    with pytest.raises(ValueError, match=r"class 0 has 5.*selection 'last'"):
        draw_splits(labels, 5, seed=0, selection="val")
    assert len(draw_splits(labels, 5, seed=0, selection="last").val) == 0


@pytest.mark.parametrize("selection", ["last", "test"])
def test_without_validation_full_data_keeps_the_whole_training_split(selection: str) -> None:
    labels = _labels()
    full = draw_splits(labels, -1, seed=3, selection=selection)
    assert torch.equal(full.train, torch.arange(len(labels))) and len(full.val) == 0
    few = draw_splits(labels, 5, seed=3, selection=selection)
    assert torch.equal(few.train, n_shot_indices(labels, 5, seed=3)) and len(few.val) == 0
    carved = draw_splits(labels, -1, seed=3, selection="val")
    assert len(carved.train) + len(carved.val) == len(labels)


def test_stratified_subset_is_fixed_and_balanced() -> None:
    labels = _labels()
    subset = stratified_subset(labels, 30)
    assert torch.bincount(labels[subset]).tolist() == [10, 10, 10]
    assert torch.equal(subset, stratified_subset(labels, 30))
    assert torch.equal(stratified_subset(labels, -1), torch.arange(len(labels)))
    assert torch.bincount(labels[stratified_subset(labels, 75)]).tolist() == [20, 25, 25]


def test_draw_splits_names_bad_choices() -> None:
    message = "unknown selection 'best'; choose one of: val, last, test"
    with pytest.raises(ValueError, match=message):
        draw_splits(_labels(), 5, seed=0, selection="best")
    with pytest.raises(ValueError, match="unknown val_shots 'all'; choose one of: n_shot, coop"):
        draw_splits(_labels(), 5, seed=0, val_shots="all")
