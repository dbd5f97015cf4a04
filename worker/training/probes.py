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

Cheap enough to run every epoch (benchmarks/README.md has the figures):

- the statistics come from one compiled forward pass over the BatchNorm
  sample as a single batch, in which each BatchNorm normalises by that
  batch's own statistics without touching its moving averages. Those are
  then exactly the precise statistics, and the pass's predictions are
  exactly the recalibrated inference of that sample: when it is the
  training sample, ``train_eval_*_recalibrated`` cost no second pass;
- a validation set larger than ``probe_val_images`` is not evaluated again
  in full: the BatchNorm lag is measured on a fixed sample of it (the same
  images with the moving and with the re-estimated statistics) and
  subtracted from the epoch's own ``val_loss``/``val_accuracy``. Smaller
  sets are evaluated whole, exactly.

A model without BatchNorm gets neither recalibrated values nor
``bn_init_weight``: there is nothing to re-estimate, and absent (rather than a
copy of ``val_loss``) says so. A probe that fails warns and records what it
has: it never stops training.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from backend.datasets.layout import ImageEntry
from backend.datasets.split import stratified_split
from backend.settings import Settings
from backend.train_config import TrainConfig
from worker.training.pipeline import image_dataset

if TYPE_CHECKING:  # types only: TensorFlow itself stays in pipeline.py
    import tensorflow as tf

log = logging.getLogger(__name__)

BatchNorm = keras.layers.BatchNormalization
# The largest batch a probe pass takes: a sample up to this size is one batch
# (exact statistics, recalibrated predictions for free); inference activations
# of the full seed network at this size fit a GPU with room to spare.
MAX_PROBE_BATCH = 512
Statistics = list[tuple[np.ndarray, np.ndarray]]


Batches = list[tuple[Any, Any]]  # (images, labels) tensors


class GapProbes:
    """An ``EpochProbe`` for RunRecorder: call it with the model, the epoch and
    the epoch's logs."""

    def __init__(
        self,
        *,
        train_sample: tf.data.Dataset,
        bn_sample: tf.data.Dataset,
        val: tf.data.Dataset,
        val_sample: tf.data.Dataset | None = None,
    ) -> None:
        # All are fixed (no shuffle) and cached by the pipeline: the images
        # are decoded at the first epoch's probe only.
        self.train_sample = train_sample
        self.bn_sample = bn_sample
        self.val = val
        # None: the validation set is small enough to evaluate whole.
        self.val_sample = val_sample
        self._passes: dict[int, StatisticsPass] = {}
        self._kept: dict[int, Batches] = {}

    def __call__(
        self, model: keras.Model, epoch: int, logs: Mapping[str, Any] | None = None
    ) -> dict[str, float | None]:
        started = time.perf_counter()
        values: dict[str, float | None] = {}
        try:
            train = self._batches(self.train_sample)
            values.update(_prefixed("train_eval", _scores(model, train)))
            layers = batchnorm_layers(model)
            if layers:
                steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
                values["bn_init_weight"] = float(layers[0].momentum) ** steps
                values.update(self._recalibrated(model, train, logs or {}))
        except Exception:
            # A measurement must not cost the run; the epoch keeps what was measured.
            log.warning("gap probes failed at epoch %d", epoch, exc_info=True)
        values["probe_seconds"] = time.perf_counter() - started
        return values

    def _recalibrated(
        self, model: keras.Model, train: Batches, logs: Mapping[str, Any]
    ) -> dict[str, float]:
        epoch_val = [logs.get("val_loss"), logs.get("val_accuracy")]
        if self.val_sample is None or None in epoch_val:
            val_data, lagging = self._batches(self.val, keep=self.val_sample is None), None
        else:  # the sample as the epoch's validation saw it: moving statistics
            val_data = self._batches(self.val_sample)
            lagging = _scores(model, val_data)
        pass_ = self._passes.get(id(model))
        if pass_ is None or pass_.model is not model:
            pass_ = self._passes[id(model)] = StatisticsPass(model)
        statistics, train_recalibrated = pass_.run(self._batches(self.bn_sample))
        if self.bn_sample is not self.train_sample:
            train_recalibrated = None
        with replaced_statistics(model, statistics):
            val = _scores(model, val_data)
            if train_recalibrated is None:
                train_recalibrated = _scores(model, train)
        if lagging is not None:
            # The lag measured on the sample, taken off the epoch's own numbers.
            loss, accuracy = (float(value) for value in epoch_val if value is not None)
            val = {
                "loss": max(loss - lagging["loss"] + val["loss"], 0.0),
                "accuracy": min(max(accuracy - lagging["accuracy"] + val["accuracy"], 0.0), 1.0),
            }
        return {
            **_prefixed("train_eval", train_recalibrated, "_recalibrated"),
            **_prefixed("val", val, "_recalibrated"),
        }

    def _batches(self, data: tf.data.Dataset, keep: bool = True) -> Batches:
        """The dataset's batches as tensors, kept from the first call on: the
        samples are fixed, so later epochs skip tf.data altogether."""
        kept = self._kept.get(id(data))
        if kept is None:
            kept = list(data)
            if keep:
                self._kept[id(data)] = kept
        return kept


def build_gap_probes(
    folder: Path,
    images: Sequence[ImageEntry],
    train_idx: Sequence[int],
    val: tf.data.Dataset,
    config: TrainConfig,
    settings: Settings,
) -> GapProbes:
    """Probes over fixed samples of the training (and validation) images: the
    same ones every epoch and after a resume, drawn from ``config.seed``."""
    # A random order, not the manifest's: the manifest is grouped by class,
    # and BatchNorm statistics of one-class batches would miss the variance
    # between classes.
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(np.asarray(train_idx))

    def sample(indices: np.ndarray) -> tf.data.Dataset:
        entries = [images[i] for i in indices]
        return image_dataset(folder, entries, config, batch_size=_batch(len(entries), config))

    train_sample = sample(order[: settings.probe_train_images])
    if min(settings.probe_bn_images, len(order)) == min(settings.probe_train_images, len(order)):
        bn_sample = train_sample  # the same images: decode and cache them once
    else:
        bn_sample = sample(order[: settings.probe_bn_images])
    # The validation split, as the runner made it (it depends on nothing else).
    _, val_idx = stratified_split(
        [image.label for image in images], config.validation_split, config.seed
    )
    val_sample = None
    if len(val_idx) > settings.probe_val_images:
        val_sample = sample(rng.permutation(val_idx)[: settings.probe_val_images])
    return GapProbes(train_sample=train_sample, bn_sample=bn_sample, val=val, val_sample=val_sample)


def _batch(count: int, config: TrainConfig) -> int:
    return max(min(count, MAX_PROBE_BATCH), config.batch_size)


def _scores(model: keras.Model, batches: Batches) -> dict[str, float]:
    """Loss and accuracy as ``model.evaluate`` reports them, from compiled
    predictions: ``evaluate`` builds an iterator and callbacks at every call,
    which costs more than the forward pass of a small sample."""
    probabilities = [model.predict_on_batch(images) for images, _ in batches]
    labels = [keras.ops.convert_to_numpy(labels) for _, labels in batches]
    return _loss_and_accuracy(np.concatenate(probabilities), np.concatenate(labels))


def _prefixed(prefix: str, result: Mapping[str, float], suffix: str = "") -> dict[str, float]:
    return {f"{prefix}_{key}{suffix}": value for key, value in result.items()}


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, BatchNorm)]


@contextmanager
def replaced_statistics(model: keras.Model, statistics: Statistics) -> Iterator[None]:
    """BatchNorm's moving statistics replaced for the block; every moving mean
    and variance is put back, bit for bit, after it."""
    layers = batchnorm_layers(model)
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    try:
        for layer, (mean, variance) in zip(layers, statistics, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        yield
    finally:
        for layer, (mean, variance) in zip(layers, saved, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)


def precise_statistics(model: keras.Model, batches: Iterable[tuple[Any, Any]]) -> Statistics:
    """Each BatchNorm layer's input mean and variance, averaged over the batches.

    The forward pass is the training one for BatchNorm only (batch statistics,
    so each layer sees what it saw in training) and the inference one for
    every other layer: dropout and augmentation stay off, so neither distorts
    the statistics. Averaging batch variances (weighted by batch size) is the
    usual precise-BN estimate, as in Wu & Johnson, "Rethinking Batch in
    BatchNorm" (2021); from a single batch it is exact.
    """
    return StatisticsPass(model).run(batches)[0]


class StatisticsPass:
    """A compiled forward pass that shares the model's layers (so its weights,
    never a copy) with each BatchNorm swapped for ``_BatchStatistics``."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        inputs = keras.Input(shape=model.input_shape[1:], dtype=model.inputs[0].dtype)
        x = inputs
        moments = []
        for layer in _chain(model):
            if isinstance(layer, BatchNorm):
                x, mean, variance = _BatchStatistics(layer)(x)
                moments += [mean, variance]
            else:
                x = layer(x)
        self.forward = keras.Model(inputs, [x, *moments], name=f"{model.name}_bn_statistics")
        self.forward.jit_compile = model.jit_compile

    def run(self, batches: Iterable[tuple[Any, Any]]) -> tuple[Statistics, dict[str, float] | None]:
        """The statistics, and the loss and accuracy of the recalibrated model
        on ``batches`` when they are a single batch (None otherwise)."""
        sums: list[np.ndarray] = []
        seen = 0
        first: tuple[np.ndarray, np.ndarray] | None = None
        for count, (images, labels) in enumerate(batches, start=1):
            outputs = self.forward.predict_on_batch(images)
            size = int(images.shape[0])
            weighted = [np.asarray(moment, dtype=np.float64) * size for moment in outputs[1:]]
            sums = weighted if not sums else [a + b for a, b in zip(sums, weighted, strict=True)]
            seen += size
            first = (
                (np.asarray(outputs[0]), keras.ops.convert_to_numpy(labels)) if count == 1 else None
            )
        if not seen:
            raise ValueError("no images to re-estimate BatchNorm statistics from")
        means = [(total / seen).astype(np.float32) for total in sums]
        statistics = list(zip(means[0::2], means[1::2], strict=True))
        scores = None if first is None else _loss_and_accuracy(*first)
        return statistics, scores


def _loss_and_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Loss and accuracy as the compiled model reports them (curvelab compiles
    sparse categorical cross-entropy and accuracy): means over the images."""
    losses = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    correct = np.argmax(probabilities, axis=-1) == labels
    return {
        "loss": float(np.mean(keras.ops.convert_to_numpy(losses))),
        "accuracy": float(np.mean(correct)),
    }


class _BatchStatistics(keras.layers.Layer):
    """A BatchNorm layer's training-mode normalisation, by the batch's own
    mean and variance, which it also returns; its moving averages are left
    alone. Computed in float32 as BatchNorm does, whatever the policy."""

    def __init__(self, batchnorm: keras.layers.BatchNormalization) -> None:
        super().__init__(name=f"{batchnorm.name}_statistics", dtype=batchnorm.dtype_policy)
        self.batchnorm = batchnorm

    def call(self, inputs: Any) -> tuple[Any, Any, Any]:
        bn = self.batchnorm
        x = keras.ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        axis = bn.axis % len(x.shape)
        axes = [i for i in range(len(x.shape)) if i != axis]
        mean, variance = keras.ops.moments(x, axes)
        gamma = keras.ops.cast(bn.gamma, x.dtype) if bn.scale else None
        beta = keras.ops.cast(bn.beta, x.dtype) if bn.center else None
        outputs = keras.ops.batch_normalization(
            x, mean, variance, axis=bn.axis, offset=beta, scale=gamma, epsilon=bn.epsilon
        )
        return keras.ops.cast(outputs, bn.compute_dtype), mean, variance


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
