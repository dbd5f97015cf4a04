"""How much memory training a TrainConfig on a dataset takes, before it is
queued: so that POST /api/runs refuses a run that cannot fit on any worker
(a 422 naming the fields to change) instead of queueing one that kills
every worker that takes it (worker/sweeper.py ends those after a few deaths).

Counted from the network worker/training/model.py builds and the input
pipeline of worker/training/pipeline.py, without TensorFlow:

- parameters (``parameter_count`` equals Keras's ``model.count_params()``),
  their gradients, and the optimizer's state per parameter (Adam two slots,
  SGD with momentum and RMSprop one, plain SGD none);
- activations at the batch size that backpropagation keeps: the input and
  each augmentation's copy; each conv's output (ReLU fused), each
  BatchNorm's output, each pool's, each dropout's output and mask; the dense
  layers'; and the gradients in flight, about two of the largest;
- the input pipeline: every image cached as uint8, float32 batches in the
  prefetch and map buffers, and the parallel decodes of the largest stored
  image;
- what a worker process holds before any of that (TensorFlow, Keras, the
  worker's own code): ``BASE_MB``, and an allocator overhead on the
  activations (``ACTIVATION_OVERHEAD``), both measured against Keras's peak
  RSS on CPU (benchmarks/memory_estimate.py, benchmarks/README.md).

An estimate, not a bound: it is meant to be right within some tens of
percent, which is what separates "fits" from "1024² images with 8 × 2048
filters".

A Keras Application (``config.architecture``) is counted from ``BACKBONES``:
its parameters as Keras counts them, and the elements of every layer's
output per input pixel, which backpropagation keeps (their sum grows with
the image's pixels; measured at 224×224, it is up to a fifth higher at
32×32, where the total is small anyway). The same overhead is applied to
them; it was measured on conv_bn, not on these networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.db import Dataset
from backend.train_config import TrainConfig

MIB = 1024 * 1024
# RSS of a worker process with TensorFlow and Keras loaded and a tiny
# model trained (measured: benchmarks/memory_estimate.py).
BASE_MB = 640.0
# Peak RSS over the activations counted here, on TensorFlow's CPU kernels:
# temporaries of the conv and BatchNorm gradients, allocator slack.
ACTIVATION_OVERHEAD = 1.3
# Batches of float32 images the pipeline holds at once (prefetch, map).
PIPELINE_BATCHES = 4
# Stored images decoded at once by the parallel map (AUTOTUNE, about one per
# core), each as uint8 and as float32 for the antialiased resize; matters only
# for large originals (not measured: the calibration stores images at size).
PARALLEL_DECODES = 4
_OPTIMIZER_SLOTS = {"adam": 2, "rmsprop": 1}


@dataclass(frozen=True)
class Backbone:
    """A Keras Application as worker/training/architectures.py builds it:
    without its top, average-pooled, on three channels (grayscale is
    repeated), Keras 3. tests/worker/test_architectures.py checks these
    against Keras's own counts."""

    parameters: int  # the backbone's count_params()
    moving: int  # of those, BatchNorm's moving statistics (and fixed normalisation)
    features: int  # what its pooling hands the head
    kept_per_pixel: float  # elements of all its layers' outputs, per input pixel
    largest_per_pixel: float  # its largest output, per input pixel


BACKBONES = {
    "mobilenet_v3_small": Backbone(939_120, 12_112, 576, 100.75, 4.66),
    "resnet50": Backbone(23_587_712, 53_120, 2048, 736.78, 16.58),
    "efficientnet_b0": Backbone(4_049_571, 42_023, 1280, 497.53, 24.43),
}


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    parts: dict[str, float]  # MiB each
    architecture: str = "conv_bn"

    @property
    def total_mb(self) -> float:
        return sum(self.parts.values())


def _shapes(config: TrainConfig) -> list[tuple[int, int, int]]:
    """(height, width, channels) after each block's pool, as model.py builds it."""
    height, width = config.image_size
    shapes = []
    for filters in config.filters:
        height, width = height // 2, width // 2  # MaxPooling2D(2), padding "valid"
        shapes.append((height, width, filters))
    return shapes


def parameter_count(config: TrainConfig, num_classes: int) -> int:
    """Every weight of the model, BatchNorm's moving statistics included."""
    backbone = BACKBONES.get(config.architecture)
    if backbone is not None:
        return backbone.parameters + backbone.features * num_classes + num_classes
    total, channels = 0, config.channels
    for filters in config.filters:
        for _ in range(config.convs_per_block):
            total += config.kernel_size**2 * channels * filters + filters
            if config.batch_norm:
                total += 4 * filters  # gamma, beta, moving mean, moving variance
            channels = filters
    height, width, channels = _shapes(config)[-1]
    flat = height * width * channels
    total += flat * config.dense_units + config.dense_units
    total += config.dense_units * num_classes + num_classes
    return total


def _trainable_count(config: TrainConfig, num_classes: int) -> int:
    backbone = BACKBONES.get(config.architecture)
    if backbone is not None:
        return parameter_count(config, num_classes) - backbone.moving
    moving = sum(2 * f * config.convs_per_block for f in config.filters) if config.batch_norm else 0
    return parameter_count(config, num_classes) - moving


def _activations_per_image(config: TrainConfig, num_classes: int) -> tuple[float, float]:
    """Elements backpropagation keeps per image, and the largest single tensor."""
    height, width = config.image_size
    image = height * width * config.channels
    augments = sum([config.augment.flip, config.augment.rotate > 0, config.augment.zoom > 0])
    kept, largest = float(image * (1 + augments)), float(image)
    backbone = BACKBONES.get(config.architecture)
    if backbone is not None:
        pixels = height * width
        kept += 3 * pixels * 2  # at most: the RGB copy of a grayscale image, the rescaled one
        kept += backbone.kept_per_pixel * pixels
        kept += backbone.features * (2.25 if config.dropout > 0 else 1) + num_classes
        return kept, max(largest, backbone.largest_per_pixel * pixels)
    for filters, (pooled_h, pooled_w, _) in zip(config.filters, _shapes(config), strict=True):
        full = height * width * filters
        per_conv = full * (2 if config.batch_norm else 1)  # conv+ReLU, then BatchNorm
        kept += per_conv * config.convs_per_block
        pooled = pooled_h * pooled_w * filters
        kept += pooled
        if config.dropout > 0:
            kept += pooled * 1.25  # output, and a mask of bytes
        largest = max(largest, full)
        height, width = pooled_h, pooled_w
    kept += config.dense_units * (2.25 if config.dropout > 0 else 1) + num_classes
    return kept, largest


def estimate(
    config: TrainConfig,
    num_images: int,
    num_classes: int,
    largest_image: tuple[int, int] | None = None,
) -> MemoryEstimate:
    """The training's peak memory on a worker, in parts. ``largest_image``:
    the largest stored image (height, width), decoded before it is resized."""
    activation_bytes = 2 if config.mixed_precision else 4
    params = parameter_count(config, num_classes)
    trainable = _trainable_count(config, num_classes)
    slots = _OPTIMIZER_SLOTS.get(config.optimizer, 0)
    if config.optimizer == "sgd" and config.momentum > 0:
        slots = 1
    kept, largest = _activations_per_image(config, num_classes)
    batch = config.batch_size
    # Kept for the backward pass, plus the gradients in flight (about two of the largest).
    activations = batch * (kept + 2 * largest) * activation_bytes * ACTIVATION_OVERHEAD
    height, width = config.image_size
    pixels = height * width * config.channels
    source_h, source_w = largest_image or config.image_size
    decodes = PARALLEL_DECODES * source_h * source_w * config.channels * (1 + 4)
    parts = {
        "base": BASE_MB,
        "weights": params * 4 / MIB,
        "gradients": trainable * 4 / MIB,
        "optimizer": trainable * slots * 4 / MIB,
        "activations": activations / MIB,
        "pipeline": (num_images * pixels + PIPELINE_BATCHES * batch * pixels * 4 + decodes) / MIB,
    }
    return MemoryEstimate(params, parts, config.architecture)


def too_big(estimated: MemoryEstimate, budget_mb: float) -> str | None:
    """The 422's detail when the estimate exceeds ``budget_mb``; None if it fits."""
    if estimated.total_mb <= budget_mb:
        return None
    parts = estimated.parts
    biggest = max(("activations", "weights", "pipeline"), key=lambda name: parts[name])
    advice = {
        "activations": "lower batch_size, image_size or filters (or set mixed_precision)",
        "weights": "lower dense_units or filters, or add a block to shrink what reaches dense",
        "pipeline": "lower image_size (every image is cached at that size) or batch_size",
    }[biggest]
    if estimated.architecture in BACKBONES and biggest != "pipeline":
        advice = (
            f"lower batch_size or image_size (or set mixed_precision), or choose a smaller "
            f"architecture than {estimated.architecture}"
        )
    return (
        f"this run needs about {estimated.total_mb:,.0f} MiB to train "
        f"({estimated.parameters:,} parameters; activations {parts['activations']:,.0f} MiB, "
        f"weights, gradients and optimizer "
        f"{parts['weights'] + parts['gradients'] + parts['optimizer']:,.0f} MiB), "
        f"more than the {budget_mb:,.0f} MiB a worker has: {advice}"
    )


def largest_stored_image(image_shapes: list[Any]) -> tuple[int, int] | None:
    """The largest (height, width) of a dataset's ``image_shapes`` (dicts
    with height and width, or [height, width] pairs)."""
    sizes = []
    for shape in image_shapes or []:
        if isinstance(shape, dict):
            height, width = shape.get("height"), shape.get("width")
        elif isinstance(shape, list | tuple) and len(shape) >= 2:
            height, width = shape[0], shape[1]
        else:
            continue
        if isinstance(height, int) and isinstance(width, int):
            sizes.append((height, width))
    return max(sizes, key=lambda size: size[0] * size[1]) if sizes else None


def for_dataset(config: TrainConfig, dataset: Dataset) -> MemoryEstimate:
    return estimate(
        config,
        dataset.num_images,
        max(2, len(dataset.classes)),
        largest_stored_image(dataset.image_shapes),
    )
