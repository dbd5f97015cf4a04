"""BestWeights: keep the weights of the epoch with the lowest val_loss, beside
the final model.

Weights only (``best.weights.h5``: cheaper than a whole model at every
improvement), with the epoch and its val_loss stored as attributes of the same
file, which is written under a temporary name and renamed into place: no
reader, and no resumed run, ever sees one epoch's weights labelled with
another's. Once the run has trained, the evaluation makes it a whole model
(``best.keras``) for download and predict.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import keras

log = logging.getLogger(__name__)

_EPOCH = "curvelab_epoch"
_VAL_LOSS = "curvelab_val_loss"


@dataclass(frozen=True)
class Best:
    epoch: int  # 1-based
    val_loss: float


def read_best(path: Path) -> Best | None:
    """The epoch and val_loss of the weights at ``path``; None if there are none."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as handle:
            return Best(int(handle.attrs[_EPOCH]), float(handle.attrs[_VAL_LOSS]))
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable best weights %s: %s", path, exc)
        return None


def save_best(model: keras.Model, path: Path, best: Best) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot keeps the partial file out of globs; Keras wants the suffix.
    partial = path.with_name(f".partial-{path.name}")
    try:
        model.save_weights(partial)
        with h5py.File(partial, "a") as handle:
            handle.attrs[_EPOCH] = best.epoch
            handle.attrs[_VAL_LOSS] = best.val_loss
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def best_model(model: keras.Model, path: Path) -> keras.Model:
    """A copy of ``model`` holding the weights saved at ``path``, compiled like
    it, with a fresh optimizer of the same settings: the final optimizer state
    belongs to other weights."""
    copy = keras.models.clone_model(model)
    copy.load_weights(path)
    optimizer = type(model.optimizer).from_config(model.optimizer.get_config())
    copy.compile(optimizer=optimizer, loss=model.loss, metrics=["accuracy"])
    # Built, so that the saved file loads without a mismatched optimizer.
    optimizer.build(copy.trainable_variables)
    return copy


class BestWeights(keras.callbacks.Callback):
    """Saves the model's weights at each whole epoch that lowers val_loss.

    ``initial_epoch``: where this fit starts (0-based, as Keras counts). A
    resumed run keeps the best of the epochs it already has; a run that
    started over forgets a best from epochs it no longer has.
    """

    def __init__(self, path: Path, *, steps_per_epoch: int, initial_epoch: int = 0) -> None:
        super().__init__()
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
        self.path = path
        self.steps_per_epoch = steps_per_epoch
        prior = read_best(path)
        self.best = prior if prior is not None and prior.epoch <= initial_epoch else None
        self._steps = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._steps = 0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._steps = batch + 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        # An epoch cut short (cancel, shutdown) is validated too, but it is not
        # an epoch of the run: the recorder does not record it either.
        if self._steps < self.steps_per_epoch or logs.get("val_loss") is None:
            return
        val_loss = float(logs["val_loss"])
        if not math.isfinite(val_loss) or (self.best and val_loss >= self.best.val_loss):
            return
        best = Best(epoch + 1, val_loss)
        try:
            save_best(self.model, self.path, best)
        except Exception as exc:  # a lost best model must never stop training
            log.warning("could not save the weights of epoch %d: %s", best.epoch, exc)
            return
        self.best = best
