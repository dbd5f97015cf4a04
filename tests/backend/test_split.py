"""The stratified split: disjoint, complete, balanced, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from backend.datasets.split import held_out, stratified_split


def test_split_is_a_stratified_partition() -> None:
    labels = np.repeat(np.arange(4), [50, 20, 5, 2])
    train, val = stratified_split(labels, 0.2, seed=1)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(labels.size))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted
    assert np.bincount(labels[val], minlength=4).tolist() == [10, 4, 1, 1]
    assert np.bincount(labels[train], minlength=4).tolist() == [40, 16, 4, 1]


def test_small_classes_get_both_sides_and_singletons_train() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    for split in (0.01, 0.5, 0.99):
        train, val = stratified_split(labels, split, seed=3)
        assert set(labels[val]) == {0, 1}, split
        assert set(labels[train]) == {0, 1, 2}, split


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels = np.repeat(np.arange(3), 30)
    first = stratified_split(labels, 0.3, seed=5)
    again = stratified_split(labels.tolist(), 0.3, seed=5)
    other = stratified_split(labels, 0.3, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize(
    ("labels", "split"),
    [([0, 1], 0.0), ([0, 1], 1.0), ([[0, 1]], 0.2), ([0, -1], 0.2), ([0.5, 1.0], 0.2)],
)
def test_bad_arguments_are_value_errors(labels: list, split: float) -> None:
    with pytest.raises(ValueError):
        stratified_split(labels, split, seed=0)


def test_held_out_counts_match_the_split() -> None:
    # The diagnosis sizes validation from class counts alone: same numbers.
    counts = [50, 20, 5, 2, 1]
    labels = np.repeat(np.arange(len(counts)), counts)
    for split in (0.1, 0.2, 0.5, 0.9):
        _, val = stratified_split(labels, split, seed=2)
        assert np.bincount(labels[val], minlength=len(counts)).tolist() == [
            held_out(count, split) for count in counts
        ]
