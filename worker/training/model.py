"""The network a TrainConfig describes, and how it is compiled.

Keras 3 functional API with every layer named, so a saved model, a summary
and the gap probes (which look for the BatchNormalization layers) all read
the same: ``block2_conv1``, ``block2_bn1``, ``block2_pool``, ...

Mixed precision is set layer by layer (``dtype=``), not with Keras's global
policy: a worker trains one run after another in one process, and a global
policy set for one run would leak into the next. The saved model carries each
layer's policy, so a resumed run computes as it started.
"""

from __future__ import annotations

import keras

from backend.train_config import TrainConfig


def make_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """Conv blocks (Conv+ReLU, BatchNorm) × convs_per_block, each ending in a
    2×2 max-pool and optional dropout; then Flatten, Dense, softmax.

    Seeds Keras (weights, dropout, augmentation) from ``config.seed``.
    """
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    height, width = config.image_size
    if min(height, width) >> len(config.filters) < 1:
        raise ValueError(
            f"{len(config.filters)} pooling blocks shrink a {height}×{width} image below 1×1"
        )
    keras.utils.set_random_seed(config.seed)
    policy = dtype_policy(config)

    inputs = keras.Input(shape=(height, width, config.channels), name="image")
    x = inputs
    augment = config.augment
    # Augmentation layers are active in training only: validation and the
    # saved model see the images as they are.
    if augment.flip:
        x = keras.layers.RandomFlip("horizontal", seed=config.seed, name="augment_flip")(x)
    if augment.rotate > 0:
        x = keras.layers.RandomRotation(augment.rotate, seed=config.seed, name="augment_rotate")(x)
    if augment.zoom > 0:
        x = keras.layers.RandomZoom(augment.zoom, seed=config.seed, name="augment_zoom")(x)

    for block, filters in enumerate(config.filters, start=1):
        for conv in range(1, config.convs_per_block + 1):
            x = keras.layers.Conv2D(
                filters,
                config.kernel_size,
                padding="same",
                activation="relu",
                name=f"block{block}_conv{conv}",
                dtype=policy,
            )(x)
            if config.batch_norm:
                x = keras.layers.BatchNormalization(
                    momentum=config.bn_momentum, name=f"block{block}_bn{conv}", dtype=policy
                )(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool", dtype=policy)(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"block{block}_dropout", dtype=policy)(x)

    x = keras.layers.Flatten(name="flatten", dtype=policy)(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", name="dense", dtype=policy)(x)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="dense_dropout", dtype=policy)(x)
    # float32 whatever the policy: a softmax in float16 saturates.
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", name="predictions", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name="curvelab_cnn")


def dtype_policy(config: TrainConfig) -> str:
    """``mixed_float16`` (float16 compute, float32 weights) or ``float32``."""
    return "mixed_float16" if config.mixed_precision else "float32"


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=config.learning_rate)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=config.learning_rate, momentum=config.momentum)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=config.learning_rate)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def compile_model(model: keras.Model, config: TrainConfig) -> keras.Model:
    """Integer labels, softmax outputs: sparse categorical cross-entropy.

    With mixed precision the optimizer scales the loss, so that float16
    gradients do not underflow (Keras wraps it only when the *global* policy
    is mixed; here the layers carry the policy). ``jit_compile`` as
    configured: XLA, or TensorFlow's plain graph. JAX has no graph without
    XLA (``jit_compile=False`` would run it op by op), so on JAX it is on.
    """
    optimizer = make_optimizer(config)
    if config.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=config.jit_compile or keras.backend.backend() == "jax",
    )
    return model
