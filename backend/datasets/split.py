"""The train/validation split: which manifest images each side gets.

Numpy only, so it is cheap to test, the same on every Keras backend, and
shared by the worker (which trains on the split) and the backend (whose
diagnosis needs to know which images were validated on: leakage, the size
of the validation set). Deterministic from labels, split and seed, so
neither side has to store it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def held_out(count: int, validation_split: float) -> int:
    """How many of a class's ``count`` images go to validation.

    ``validation_split`` of them, rounded; a class with at least two images
    keeps at least one on each side, a class of one trains on it.
    """
    if count < 2:
        return 0
    return min(max(int(count * validation_split + 0.5), 1), count - 1)


def stratified_split(
    labels: Sequence[int] | NDArray[np.integer], validation_split: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Indices of the training and validation images, each sorted.

    Every class holds out ``held_out(its size)`` images, so the validation
    set has the dataset's class balance. The same labels and seed give the
    same split.
    """
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"validation_split must be between 0 and 1, got {validation_split}")
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {array.shape}")
    if array.size and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise ValueError("labels must be non-negative integers")
    rng = np.random.default_rng(seed)
    train: list[NDArray[np.int64]] = []
    val: list[NDArray[np.int64]] = []
    # Classes in label order, so the random stream (and the split) is stable.
    for label in np.unique(array):
        members = np.flatnonzero(array == label).astype(np.int64)
        rng.shuffle(members)
        count = held_out(len(members), validation_split)
        val.append(members[:count])
        train.append(members[count:])
    empty = np.empty(0, dtype=np.int64)
    return (
        np.sort(np.concatenate(train)) if train else empty,
        np.sort(np.concatenate(val)) if val else empty,
    )
