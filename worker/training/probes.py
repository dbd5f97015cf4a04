"""The worker's gap probes: curvelab's ``GapProbes`` over fixed samples of a
run's stored dataset.

What is measured, and how, lives in the client package
(``curvelab.probes``: one home for what is measured inside Keras, for the
worker's runs and a user's own fit alike). Here only the samples are made:
fixed tf.data pipelines over images drawn from ``config.seed``, read into
batches once, at the first epoch's probe (the images are decoded then, and
later epochs skip tf.data altogether).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from backend.datasets.layout import ImageEntry
from backend.datasets.split import stratified_split
from backend.settings import Settings
from backend.train_config import TrainConfig
from curvelab.probes import GapProbes
from worker.training.pipeline import image_dataset

if TYPE_CHECKING:  # types only: TensorFlow itself stays in pipeline.py
    import tensorflow as tf

log = logging.getLogger(__name__)

# The largest batch a probe pass takes: a sample up to this size is one batch
# (exact statistics, recalibrated predictions for free); inference activations
# of the full seed network at this size fit a GPU with room to spare.
MAX_PROBE_BATCH = 512


class DatasetProbes:
    """An ``EpochProbe`` for RunRecorder over tf.data samples: call it with
    the model, the epoch and the epoch's logs."""

    def __init__(
        self,
        *,
        train_sample: tf.data.Dataset,
        bn_sample: tf.data.Dataset,
        val: tf.data.Dataset,
        val_sample: tf.data.Dataset | None = None,
    ) -> None:
        # All are fixed (no shuffle) and cached by the pipeline.
        self.train_sample = train_sample
        self.bn_sample = bn_sample
        self.val = val
        # None: the validation set is small enough to evaluate whole.
        self.val_sample = val_sample
        self._probes: GapProbes | None = None

    @property
    def probes(self) -> GapProbes:
        """The measuring probes, their samples read into batches on first use."""
        if self._probes is None:
            train = list(self.train_sample)
            self._probes = GapProbes(
                train=train,
                bn=None if self.bn_sample is self.train_sample else list(self.bn_sample),
                # A large validation set is read again only when the epoch's
                # own numbers are missing, and never kept in memory.
                val=list(self.val) if self.val_sample is None else _Reread(self.val),
                val_sample=None if self.val_sample is None else list(self.val_sample),
            )
        return self._probes

    def __call__(
        self, model: keras.Model, epoch: int, logs: Mapping[str, Any] | None = None
    ) -> dict[str, float | None]:
        started = time.perf_counter()
        try:
            probes = self.probes
        except Exception:
            # An unreadable sample must not cost the run, as a failing probe does not.
            log.warning("gap probes failed at epoch %d", epoch, exc_info=True)
            return {"probe_seconds": time.perf_counter() - started}
        return probes(model, epoch, logs)


class _Reread:
    """A dataset's batches, read from it again at each iteration."""

    def __init__(self, dataset: tf.data.Dataset) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return iter(self.dataset)


def build_gap_probes(
    folder: Path,
    images: Sequence[ImageEntry],
    train_idx: Sequence[int],
    val: tf.data.Dataset,
    config: TrainConfig,
    settings: Settings,
) -> DatasetProbes:
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
    return DatasetProbes(
        train_sample=train_sample, bn_sample=bn_sample, val=val, val_sample=val_sample
    )


def _batch(count: int, config: TrainConfig) -> int:
    return max(min(count, MAX_PROBE_BATCH), config.batch_size)
