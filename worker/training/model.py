"""The network a TrainConfig describes, and how it is compiled.

The networks themselves are built in worker/training/architectures.py;
``make_model`` is the one entry the runner, the tests and the benchmarks
call, whichever the architecture.
"""

from __future__ import annotations

import keras

from backend.train_config import TrainConfig
from worker.training.architectures import build, dtype_policy

__all__ = ["compile_model", "dtype_policy", "make_model", "make_optimizer"]


def make_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """The network ``config.architecture`` names (conv_bn: Conv+BN blocks,
    then Flatten, Dense, softmax; an application: its backbone, then a
    softmax head), every BatchNorm at ``config.bn_momentum``.

    Seeds Keras (weights, dropout, augmentation) from ``config.seed``.
    """
    return build(config, num_classes)


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
