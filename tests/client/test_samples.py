"""curvelab.samples.fixed_batches: the first images of every kind of data a
user hands ``model.fit``, as numpy batches; generators read no further than
needed; clear errors for what it cannot read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pytest

from curvelab.samples import fixed_batches

X = np.arange(10 * 3, dtype="float32").reshape(10, 3)
Y = np.arange(10) % 2


def _flat(batches: list[tuple[Any, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _check(batches: list[tuple[Any, np.ndarray]], images: int, batch_size: int) -> None:
    x, y = _flat(batches)
    np.testing.assert_array_equal(x, X[:images])
    np.testing.assert_array_equal(y, Y[:images])
    assert [len(b) for _, b in batches][:-1] == [batch_size] * (len(batches) - 1)
    assert all(isinstance(x, np.ndarray) and isinstance(y, np.ndarray) for x, y in batches)


def test_a_tuple_of_arrays_with_or_without_weights() -> None:
    _check(fixed_batches((X, Y), images=7, batch_size=3), 7, 3)
    _check(fixed_batches((X, Y, np.ones(10)), images=4, batch_size=4), 4, 4)
    _check(fixed_batches((X, Y), images=50, batch_size=4), 10, 4)  # fewer than asked


def test_dict_inputs_are_sliced_alike() -> None:
    batches = fixed_batches(({"a": X, "b": X * 2}, Y), images=5, batch_size=2)
    assert [len(y) for _, y in batches] == [2, 2, 1]
    np.testing.assert_array_equal(batches[2][0]["b"], X[4:5] * 2)


def test_a_generator_is_read_only_as_far_as_needed() -> None:
    read = []

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, 10, 2):
            read.append(start)
            yield X[start : start + 2], Y[start : start + 2]

    _check(fixed_batches(batches(), images=5, batch_size=4), 5, 4)
    assert read == [0, 2, 4]
    _check(
        fixed_batches([(X[:6], Y[:6]), (X[6:], Y[6:], np.ones(4))], images=9, batch_size=9), 9, 9
    )


def test_a_py_dataset() -> None:
    class Batches(keras.utils.PyDataset):
        def __len__(self) -> int:
            return 5

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            return X[index * 2 : index * 2 + 2], Y[index * 2 : index * 2 + 2]

    _check(fixed_batches(Batches(), images=6, batch_size=6), 6, 6)


def test_tf_data_batched_single_examples_and_mapped() -> None:
    tf = pytest.importorskip("tensorflow")
    examples = tf.data.Dataset.from_tensor_slices((X, Y))
    _check(fixed_batches(examples, images=5, batch_size=2), 5, 2)
    _check(fixed_batches(examples.batch(4), images=6, batch_size=3), 6, 3)
    mapped = examples.batch(3).map(lambda x, y: (x, y)).prefetch(1)
    _check(fixed_batches(mapped, images=10, batch_size=10), 10, 10)
    _check(fixed_batches(examples.batch(3).unbatch(), images=4, batch_size=4), 4, 4)
    weighted = tf.data.Dataset.from_tensor_slices((X, Y, np.ones(10))).batch(5)
    _check(fixed_batches(weighted, images=10, batch_size=5), 10, 5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("images.npz", "cannot be read"),
        ({"x": X, "y": Y}, "cannot be read"),
        (42, "cannot be read"),
        ([X[:2], X[2:4]], "need labels"),
        ([(X[:2], Y[:3])], "2 inputs and labels of shape"),
        ([], "no batches"),
    ],
)
def test_what_it_cannot_read_is_a_clear_value_error(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fixed_batches(data, images=4, batch_size=2)


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        fixed_batches((X, Y), images=0, batch_size=2)
