"""The networks a TrainConfig names (``config.architecture``), built with
random weights at the dataset's image size and class count.

- ``conv_bn``: the question's Conv+BN blocks, every layer named
  (``block2_conv1``, ``block2_bn1``, ``block2_pool``, ...).
- A Keras Application (``APPLICATIONS``): the application without its top,
  average-pooled, as one nested model named after it, between the same
  augmentation layers as conv_bn and a classifier head (dropout, then
  ``predictions``). Nested, so that a later weights file for the backbone
  loads into ``model.get_layer(<its name>)`` alone.

Mixed precision is set per layer (``dtype=``) in conv_bn. Keras Applications
take no ``dtype=``, so their layers are built under Keras's dtype policy, set
for the construction only and restored after it (Keras keeps that policy per
thread): a worker trains one run after another in one process, and a policy
left set would leak into the next. The saved model carries each layer's
policy, so a resumed run computes as it started.

``bn_momentum`` is every BatchNormalization's, nested models included:
``apply_bn_momentum`` sets it after building, whichever the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras

from backend.train_config import TrainConfig


@dataclass(frozen=True)
class Application:
    build: Callable[..., keras.Model]
    # From the pipeline's 0–1 floats to what the application's stem expects
    # with its ImageNet weights (None: fed as they are), so that a backbone
    # with those weights loaded sees what it was trained on.
    rescale: tuple[float, float] | None
    options: dict[str, Any] = field(default_factory=dict)


APPLICATION_BUILDERS: dict[str, Application] = {
    # Its own Rescaling maps 0–255 to [-1, 1]; off, and ours maps 0–1 there.
    "mobilenet_v3_small": Application(
        keras.applications.MobileNetV3Small, (2.0, -1.0), {"include_preprocessing": False}
    ),
    # ImageNet ResNet50 weights expect Caffe's BGR mean-subtracted 0–255,
    # which takes a channel flip no built-in layer does (a Lambda would not
    # load with safe_mode). With random weights it makes no difference: the
    # first conv has a bias and BatchNorm follows, which absorb any affine
    # change of the input. Pretrained weights will need that preprocessing.
    "resnet50": Application(keras.applications.ResNet50, None),
    # Its stem always divides by 255 (Keras 3 has no switch): fed 0–255.
    "efficientnet_b0": Application(keras.applications.EfficientNetB0, (255.0, 0.0)),
}


def build(config: TrainConfig, num_classes: int) -> keras.Model:
    """The network ``config.architecture`` names, with every BatchNorm's
    momentum ``config.bn_momentum``. Seeds Keras (weights, dropout,
    augmentation) from ``config.seed``."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    keras.utils.set_random_seed(config.seed)
    if config.architecture == "conv_bn":
        model = conv_bn(config, num_classes)
    else:
        model = application(config, num_classes)
    apply_bn_momentum(model, config.bn_momentum)
    return model


def dtype_policy(config: TrainConfig) -> str:
    """``mixed_float16`` (float16 compute, float32 weights) or ``float32``."""
    return "mixed_float16" if config.mixed_precision else "float32"


def augmentation(x: Any, config: TrainConfig) -> Any:
    """The configured augmentation layers on ``x``. They are active in
    training only: validation and the saved model see the images as they are."""
    augment = config.augment
    if augment.flip:
        x = keras.layers.RandomFlip("horizontal", seed=config.seed, name="augment_flip")(x)
    if augment.rotate > 0:
        x = keras.layers.RandomRotation(augment.rotate, seed=config.seed, name="augment_rotate")(x)
    if augment.zoom > 0:
        x = keras.layers.RandomZoom(augment.zoom, seed=config.seed, name="augment_zoom")(x)
    return x


def conv_bn(config: TrainConfig, num_classes: int) -> keras.Model:
    """Conv blocks (Conv+ReLU, BatchNorm) × convs_per_block, each ending in a
    2×2 max-pool and optional dropout; then Flatten, Dense, softmax."""
    height, width = config.image_size
    if min(height, width) >> len(config.filters) < 1:
        raise ValueError(
            f"{len(config.filters)} pooling blocks shrink a {height}×{width} image below 1×1"
        )
    policy = dtype_policy(config)
    inputs = keras.Input(shape=(height, width, config.channels), name="image")
    x = augmentation(inputs, config)
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
    return keras.Model(inputs, _head(x, num_classes), name="curvelab_cnn")


def application(config: TrainConfig, num_classes: int) -> keras.Model:
    """The Keras Application ``config.architecture`` with random weights,
    its top replaced by dropout and a ``num_classes`` softmax."""
    spec = APPLICATION_BUILDERS.get(config.architecture)
    if spec is None:
        raise ValueError(f"unknown architecture {config.architecture!r}")
    height, width = config.image_size
    inputs = keras.Input(shape=(height, width, config.channels), name="image")
    x = augmentation(inputs, config)
    if config.channels == 1:
        # Repeated to RGB rather than a one-channel stem: ImageNet weights
        # (three channels) stay loadable into the backbone.
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if spec.rescale is not None:
        scale, offset = spec.rescale
        x = keras.layers.Rescaling(scale, offset, name="to_backbone_range")(x)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype_policy(config))
    try:
        backbone = spec.build(
            weights=None,
            include_top=False,
            input_shape=(height, width, 3),
            pooling="avg",
            **spec.options,
        )
    finally:
        keras.config.set_dtype_policy(previous)
    x = backbone(x)
    policy = dtype_policy(config)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="head_dropout", dtype=policy)(x)
    return keras.Model(inputs, _head(x, num_classes), name=f"curvelab_{config.architecture}")


def _head(x: Any, num_classes: int) -> Any:
    # float32 whatever the policy: a softmax in float16 saturates.
    return keras.layers.Dense(
        num_classes, activation="softmax", name="predictions", dtype="float32"
    )(x)


def batch_norm_layers(model: keras.layers.Layer) -> Iterator[keras.layers.BatchNormalization]:
    """Every BatchNormalization in ``model``, inside nested models too, frozen
    ones included (unlike the probes' list): a backbone frozen now may be
    trained later, with the configured momentum."""
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        else:
            yield from batch_norm_layers(layer)


def apply_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Set every BatchNormalization's momentum (nested models included);
    returns how many it set. BatchNorm reads it when its training step is
    traced, and saves it in its config: call it before ``fit``, and a
    checkpoint loaded later has it."""
    count = 0
    for layer in batch_norm_layers(model):
        layer.momentum = momentum
        count += 1
    return count
