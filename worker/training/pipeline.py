"""The input pipeline: tf.data from a stored dataset's manifest.

The one module that uses TensorFlow directly (Keras 3 trains from a
``tf.data.Dataset`` on any backend). Each image is read, decoded and resized
once, kept as uint8 in an in-memory cache (a quarter of float32's size), and
only then shuffled, batched and scaled to 0–1: later epochs never decode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from backend.datasets.layout import ImageEntry
from backend.train_config import TrainConfig


@dataclass(frozen=True)
class Pipelines:
    train: tf.data.Dataset
    val: tf.data.Dataset
    train_images: int
    val_images: int
    train_steps: int  # batches per epoch
    val_steps: int


def _load(config: TrainConfig) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    height, width = config.image_size
    channels = config.channels

    def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )
        # Antialiased: downscaling a large photo to 50×55 without it aliases.
        resized = tf.image.resize(image, (height, width), antialias=True)
        pixels = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
        pixels.set_shape((height, width, channels))
        return pixels, label

    return load


def _scale(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(images, tf.float32) / 255.0, labels


def image_dataset(
    folder: Path,
    entries: Sequence[ImageEntry],
    config: TrainConfig,
    *,
    shuffle_seed: int | None = None,
    batch_size: int | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images in 0–1, int32 labels) for ``entries``.

    With ``shuffle_seed`` the order changes every epoch (reproducibly from the
    seed); without it the order is the entries' order, as validation wants.
    ``batch_size`` defaults to the configured one.
    """
    if not entries:
        raise ValueError("no images to build a dataset from")
    paths = [str(folder / entry.path) for entry in entries]
    labels = [entry.label for entry in entries]
    data = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, dtype=tf.int32)))
    data = data.map(_load(config), num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle_seed is not None:
        # A buffer of the whole set is a full shuffle; elements are the cached
        # uint8 tensors, shared rather than copied.
        data = data.shuffle(len(entries), seed=shuffle_seed, reshuffle_each_iteration=True)
    return (
        data.batch(batch_size or config.batch_size)
        .map(_scale, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def build_pipelines(
    folder: Path,
    images: Sequence[ImageEntry],
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    config: TrainConfig,
    shuffle_seed: int,
) -> Pipelines:
    """The training (shuffled) and validation (fixed order) datasets."""
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(
            f"the split left {len(train_idx)} training and {len(val_idx)} validation images; "
            "a class needs at least 2 images to appear on both sides"
        )
    train = [images[i] for i in train_idx]
    val = [images[i] for i in val_idx]
    return Pipelines(
        train=image_dataset(folder, train, config, shuffle_seed=shuffle_seed),
        val=image_dataset(folder, val, config),
        train_images=len(train),
        val_images=len(val),
        train_steps=math.ceil(len(train) / config.batch_size),
        val_steps=math.ceil(len(val) / config.batch_size),
    )
