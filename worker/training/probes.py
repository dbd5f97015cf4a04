"""Gap probes: what ``val_loss − loss`` is made of, measured at each epoch end.

Keras's ``loss`` is a running mean over the epoch in training mode (batch
statistics, dropout on); ``val_loss`` is one evaluation at the epoch's end
in inference mode (BatchNorm's moving averages, dropout off). So, without
changing the trained model, each epoch also records:

- ``train_eval_loss``/``train_eval_accuracy``: a fixed sample of training
  images evaluated exactly as validation is;
- ``val_loss_recalibrated``/``val_accuracy_recalibrated``: validation with
  every BatchNorm layer's moving statistics replaced by statistics
  re-estimated from training images ("precise BN"), then restored;
- ``train_eval_loss_recalibrated``/``train_eval_accuracy_recalibrated``: the
  training sample with those same statistics: with it, the train-mode effect
  is measured apart from the lag, which ``train_eval_loss`` shares with
  validation;
- ``bn_init_weight``: ``momentum ** steps``, the share of each moving average
  still made of its initial value (mean 0, variance 1);
- ``probe_seconds``: what all of this cost.

A model without BatchNorm gets neither recalibrated values nor
``bn_init_weight``: there is nothing to re-estimate, and absent (rather than a
copy of ``val_loss``) says so. A probe that fails warns and records what it
has: it never stops training.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from backend.datasets.layout import ImageEntry
from backend.settings import Settings
from backend.train_config import TrainConfig
from worker.training.pipeline import image_dataset

if TYPE_CHECKING:  # types only: TensorFlow itself stays in pipeline.py
    import tensorflow as tf

log = logging.getLogger(__name__)

BatchNorm = keras.layers.BatchNormalization


class GapProbes:
    """An ``EpochProbe`` for RunRecorder: call it with the model and the epoch."""

    def __init__(
        self, *, train_sample: tf.data.Dataset, bn_sample: tf.data.Dataset, val: tf.data.Dataset
    ) -> None:
        # All three are fixed (no shuffle) and cached by the pipeline: the
        # images are decoded at the first epoch's probe only.
        self.train_sample = train_sample
        self.bn_sample = bn_sample
        self.val = val

    def __call__(self, model: keras.Model, epoch: int) -> dict[str, float | None]:
        started = time.perf_counter()
        values: dict[str, float | None] = {}
        try:
            result = model.evaluate(self.train_sample, return_dict=True, verbose=0)
            values.update({f"train_eval_{key}": float(value) for key, value in result.items()})
            layers = batchnorm_layers(model)
            if layers:
                steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
                values["bn_init_weight"] = float(layers[0].momentum) ** steps
                results = evaluate_recalibrated(
                    model, self.bn_sample, {"val": self.val, "train_eval": self.train_sample}
                )
                for prefix, result in results.items():
                    values.update({f"{prefix}_{k}_recalibrated": v for k, v in result.items()})
        except Exception:
            # A measurement must not cost the run; the epoch keeps what was measured.
            log.warning("gap probes failed at epoch %d", epoch, exc_info=True)
        values["probe_seconds"] = time.perf_counter() - started
        return values


def build_gap_probes(
    folder: Path,
    images: Sequence[ImageEntry],
    train_idx: Sequence[int],
    val: tf.data.Dataset,
    config: TrainConfig,
    settings: Settings,
) -> GapProbes:
    """Probes over fixed samples of the training images (the same ones every
    epoch and after a resume: drawn from ``config.seed``)."""
    # A random order, not the manifest's: the manifest is grouped by class,
    # and BatchNorm statistics of one-class batches would miss the variance
    # between classes.
    order = np.random.default_rng(config.seed).permutation(np.asarray(train_idx))
    train_entries = [images[i] for i in order[: settings.probe_train_images]]
    train_sample = image_dataset(folder, train_entries, config)
    if min(settings.probe_bn_images, len(order)) == len(train_entries):
        bn_sample = train_sample  # the same images: decode and cache them once
    else:
        bn_entries = [images[i] for i in order[: settings.probe_bn_images]]
        bn_sample = image_dataset(folder, bn_entries, config)
    return GapProbes(train_sample=train_sample, bn_sample=bn_sample, val=val)


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, BatchNorm)]


def evaluate_recalibrated(
    model: keras.Model, bn_sample: tf.data.Dataset, datasets: dict[str, tf.data.Dataset]
) -> dict[str, dict[str, float]]:
    """Evaluate each dataset with BatchNorm statistics re-estimated on
    ``bn_sample``; every moving mean and variance is put back, bit for bit,
    before returning."""
    layers = batchnorm_layers(model)
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    try:
        statistics = precise_statistics(model, bn_sample)
        for layer, (mean, variance) in zip(layers, statistics, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        return {
            name: {
                key: float(value)
                for key, value in model.evaluate(data, return_dict=True, verbose=0).items()
            }
            for name, data in datasets.items()
        }
    finally:
        for layer, (mean, variance) in zip(layers, saved, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)


def precise_statistics(
    model: keras.Model, batches: tf.data.Dataset
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each BatchNorm layer's input mean and variance, averaged over the batches.

    The forward pass is the training one for BatchNorm only (batch statistics,
    so each layer sees what it saw in training) and the inference one for
    every other layer: dropout and augmentation stay off, so neither distorts
    the statistics. Averaging batch variances (weighted by batch size) is the
    usual precise-BN estimate, as in Wu & Johnson, "Rethinking Batch in
    BatchNorm" (2021). BatchNorm's own update of its moving averages during
    this pass is overwritten by the caller.
    """
    chain = _chain(model)
    sums: dict[int, list[Any]] = {}
    seen = 0
    for images, _labels in batches:
        count = int(images.shape[0])
        x = images
        for layer in chain:
            if isinstance(layer, BatchNorm):
                axes = [axis for axis in range(len(x.shape)) if axis != layer.axis % len(x.shape)]
                mean, variance = keras.ops.moments(x, axes)
                total = sums.setdefault(id(layer), [0.0, 0.0])
                total[0] = total[0] + keras.ops.convert_to_numpy(mean).astype(np.float64) * count
                total[1] = (
                    total[1] + keras.ops.convert_to_numpy(variance).astype(np.float64) * count
                )
                x = layer(x, training=True)
            else:
                x = layer(x, training=False)
        seen += count
    if not seen:
        raise ValueError("no images to re-estimate BatchNorm statistics from")
    return [
        (
            (sums[id(layer)][0] / seen).astype(np.float32),
            (sums[id(layer)][1] / seen).astype(np.float32),
        )
        for layer in chain
        if isinstance(layer, BatchNorm)
    ]


def _chain(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers after its input, when each feeds the next (as
    ``make_model`` builds them); a branching graph is refused."""
    layers = model.layers
    if not layers or not isinstance(layers[0], keras.layers.InputLayer):
        raise ValueError("the model does not start with an Input")
    for previous, layer in itertools.pairwise(layers):
        if layer.input is not previous.output:
            raise ValueError(f"layer {layer.name} does not follow {previous.name}: not a chain")
    return layers[1:]
