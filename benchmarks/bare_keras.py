"""The baseline: the training a user would write by hand instead of curvelab.

Images loaded with Pillow into numpy, the same network written out layer by
layer, ``model.fit`` with validation data. It imports nothing of curvelab, so
it measures Keras alone. Run it on its own against a folder of class folders:

    .venv/bin/python benchmarks/bare_keras.py DATASET_DIR --epochs 4
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

EXTENSIONS = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class Network:
    """The seed network's shape; the defaults are curvelab's seed-cnn-small."""

    filters: tuple[int, ...] = (8, 16, 32, 64)
    convs_per_block: int = 2
    dense_units: int = 64
    bn_momentum: float = 0.99
    learning_rate: float = 1e-3
    batch_size: int = 128
    validation_split: float = 0.2
    seed: int = 42


def load_images(folder: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every image of every class folder (sorted), as uint8 RGB, and its label."""
    from PIL import Image  # here: gpu.py builds the model on machines without Pillow

    height, width = size
    images, labels = [], []
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    for label, class_dir in enumerate(classes):
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() not in EXTENSIONS:
                continue
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                if rgb.size != (width, height):
                    rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
                images.append(np.asarray(rgb))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int32)


def split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``share`` of each class (rounded, at least one) for validation."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held = min(max(int(len(members) * share + 0.5), 1), len(members) - 1)
        val.extend(members[:held])
        train.extend(members[held:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(val))


def build_model(input_shape: Sequence[int], num_classes: int, net: Network) -> keras.Model:
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for filters in net.filters:
        for _ in range(net.convs_per_block):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = keras.layers.BatchNormalization(momentum=net.bn_momentum)(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(net.dense_units, activation="relu")(x)
    # float32 under a mixed_float16 policy too (gpu.py), as Keras advises.
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=net.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(
    folder: Path,
    epochs: int,
    net: Network = Network(),
    size: tuple[int, int] = (50, 55),
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> keras.callbacks.History:
    keras.utils.set_random_seed(net.seed)
    images, labels = load_images(folder, size)
    train_idx, val_idx = split(labels, net.validation_split, net.seed)
    x = images.astype("float32") / 255.0
    model = build_model(x.shape[1:], int(labels.max()) + 1, net)
    return model.fit(
        x[train_idx],
        labels[train_idx],
        batch_size=net.batch_size,
        epochs=epochs,
        validation_data=(x[val_idx], labels[val_idx]),
        shuffle=True,
        callbacks=list(callbacks),
        verbose=0,
    )


class EpochTimes(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="one folder of images per class")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    times = EpochTimes()
    history = train(args.folder, args.epochs, callbacks=[times])
    for epoch, seconds in enumerate(times.seconds, start=1):
        print(
            f"epoch {epoch}: {seconds:.2f}s val_loss {history.history['val_loss'][epoch - 1]:.3f}"
        )


if __name__ == "__main__":
    main()
