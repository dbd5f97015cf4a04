"""Tiny Keras models and data for the client's tests: 16×16 images, 3 classes."""

from __future__ import annotations

import keras
import numpy as np

CLASSES = 3


def images(count: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, count)
    x = rng.normal(size=(count, 16, 16, 1)).astype("float32") + y[:, None, None, None]
    return x, y


def conv_bn(momentum: float = 0.99, optimizer: object = "adam") -> keras.Model:
    """As the question's author writes them: Input(shape=...), Conv+BN blocks, Model(...)."""
    inputs = keras.Input(shape=(16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(momentum=momentum)(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.25)(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="conv_bn")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
