"""Fixed samples for the gap probes: the first images of whatever a user
hands ``model.fit``, as numpy batches.

The probes evaluate the same images every epoch, so the sample is read once
and kept; a generator is consumed only as far as the sample needs.
TensorFlow is never imported here: a ``tf.data.Dataset`` is recognised by
its type's module and its ``as_numpy_iterator`` (a machine with JAX or
PyTorch alone has no TensorFlow to import).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import keras
import numpy as np

Batch = tuple[Any, np.ndarray]  # (inputs: an array, or a dict/list of arrays; labels)


def fixed_batches(data: Any, *, images: int, batch_size: int) -> list[Batch]:
    """The first ``images`` images of ``data`` (fewer if it has fewer), as
    batches of at most ``batch_size``.

    ``data``: a tuple ``(x, y)`` of arrays, a ``tf.data.Dataset`` of
    ``(x, y)`` batches or single examples, a ``keras.utils.PyDataset``, or
    any iterable or generator of ``(x, y)`` batches. Sample weights
    (``(x, y, w)``) are dropped. Raises ValueError for data it cannot read.
    """
    if images < 1 or batch_size < 1:
        raise ValueError(f"images and batch_size must be at least 1, got {images}, {batch_size}")
    if _is_arrays(data):
        xs, ys = [_numpy_tree(data[0])], [as_numpy(data[1])]
    elif _is_tf_dataset(data):
        batches = data.as_numpy_iterator()
        if not _tf_batched(data):
            batches = _stacked(batches, batch_size)
        xs, ys = _collect(batches, images)
    elif isinstance(data, keras.utils.PyDataset):
        xs, ys = _collect(_py_dataset_batches(data), images)
    elif isinstance(data, Iterable) and not isinstance(data, str | bytes | Mapping | np.ndarray):
        xs, ys = _collect(iter(data), images)
    else:
        raise ValueError(
            f"probe data of type {type(data).__name__} cannot be read: give a tuple (x, y) of "
            "arrays, a tf.data.Dataset, a keras.utils.PyDataset or an iterable of (x, y) batches"
        )
    x = keras.tree.map_structure(lambda *parts: np.concatenate(parts)[:images], *xs)
    y = np.concatenate(ys)[:images]
    count = min(count_images(x), len(y))
    if count == 0:
        raise ValueError("the probe data holds no images")
    return [
        (
            keras.tree.map_structure(lambda a, s=start: a[s : s + batch_size], x),
            y[start : start + batch_size],
        )
        for start in range(0, count, batch_size)
    ]


def _collect(batches: Iterator[Any], images: int) -> tuple[list[Any], list[np.ndarray]]:
    """Batches read until ``images`` images are in hand, and not one more."""
    xs: list[Any] = []
    ys: list[np.ndarray] = []
    seen = 0
    for element in batches:
        x, y = _pair(element)
        if seen and not _same_structure(x, xs[0]):
            raise ValueError("the probe data's batches change structure")
        xs.append(x)
        ys.append(y)
        seen += len(y)
        if seen >= images:
            break
    if not xs:
        raise ValueError("the probe data holds no batches")
    return xs, ys


def _pair(element: Any) -> tuple[Any, np.ndarray]:
    """(x, y) of a batch, as numpy; a weight after them is dropped."""
    if isinstance(element, Mapping) or not isinstance(element, tuple | list):
        raise ValueError(
            "each batch of the probe data must be a tuple (x, y) or (x, y, sample_weight), "
            f"got {type(element).__name__}: the probes need labels"
        )
    if len(element) not in (2, 3):
        raise ValueError(f"a batch of the probe data has {len(element)} parts, not (x, y)")
    x, y = _numpy_tree(element[0]), as_numpy(element[1])
    if y.ndim == 0 or count_images(x) != len(y):
        raise ValueError(
            f"a batch of the probe data has {count_images(x)} inputs and labels of shape {y.shape}"
        )
    return x, y


def _same_structure(a: Any, b: Any) -> bool:
    try:
        keras.tree.assert_same_structure(a, b)
    except (TypeError, ValueError):
        return False
    return True


def _is_arrays(data: Any) -> bool:
    """A tuple (x, y) or (x, y, w) of arrays with as many rows each."""
    if not isinstance(data, tuple) or len(data) not in (2, 3):
        return False
    leaves = keras.tree.flatten(data[0])
    if not leaves or not all(hasattr(a, "shape") and len(a.shape) for a in leaves):
        return False
    y = data[1]
    return hasattr(y, "shape") and len(y.shape) > 0 and y.shape[0] == leaves[0].shape[0]


def _is_tf_dataset(data: Any) -> bool:
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator")


def _tf_batched(dataset: Any) -> bool:
    """Whether a tf.data.Dataset yields batches: the nearest batching (or
    unbatching) step among the datasets it is built on says."""
    queue, seen = [dataset], set()
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        name = type(current).__name__.lower()
        if "unbatch" in name:
            return False
        if "batch" in name:
            return True
        try:
            queue.extend(current._inputs())
        except Exception:  # a source dataset (or a private API that moved)
            continue
    return False


def _stacked(examples: Iterator[Any], batch_size: int) -> Iterator[tuple[Any, np.ndarray]]:
    """Single (x, y) examples, stacked into batches."""
    chunk: list[Any] = []
    for example in examples:
        if not isinstance(example, tuple | list) or len(example) not in (2, 3):
            raise ValueError("each element of the probe dataset must be (x, y): labels are needed")
        chunk.append(example[:2])
        if len(chunk) == batch_size:
            yield _stack(chunk)
            chunk = []
    if chunk:
        yield _stack(chunk)


def _stack(chunk: list[Any]) -> tuple[Any, np.ndarray]:
    x = keras.tree.map_structure(lambda *parts: np.stack(parts), *[x for x, _ in chunk])
    return x, np.stack([np.asarray(y) for _, y in chunk])


def _py_dataset_batches(data: keras.utils.PyDataset) -> Iterator[Any]:
    count = data.num_batches
    index = 0
    while count is None or index < count:
        try:
            yield data[index]
        except IndexError:  # an infinite PyDataset that ends after all
            return
        index += 1


def as_numpy(value: Any) -> np.ndarray:
    """A numpy array of a tensor of any backend (a torch tensor on any device too)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch tensor, on whatever device
        value = value.detach().cpu()
    return np.asarray(value)


def _numpy_tree(value: Any) -> Any:
    return keras.tree.map_structure(as_numpy, value)


def count_images(x: Any) -> int:
    """The images in a batch (its inputs may be a dict or list of arrays)."""
    return int(keras.tree.flatten(x)[0].shape[0])
