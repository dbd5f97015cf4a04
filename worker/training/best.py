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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras

from worker.training.artifacts import replace_into

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


def save_best(
    model: keras.Model, path: Path, best: Best, fence: Callable[[], bool] | None = None
) -> bool:
    """Write the weights and their labels at once; False (nothing written)
    when ``fence``, asked before the rename, says the run is another's."""

    def write(partial: Path) -> None:
        model.save_weights(partial)
        with h5py.File(partial, "a") as handle:
            handle.attrs[_EPOCH] = best.epoch
            handle.attrs[_VAL_LOSS] = best.val_loss

    return replace_into(path, write, fence)


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


class BestWeights:
    """Which recorded epoch has the lowest val_loss so far, and saving its weights.

    The recorder asks ``offer`` on the training thread at each recorded epoch
    (one cut short by a cancel or a shutdown is not an epoch of the run) and
    saves from its snapshot of that epoch on its writer thread, so the
    training thread never waits for the file.

    ``initial_epoch``: where this fit starts (0-based, as Keras counts). A
    resumed run keeps the best of the epochs it already has; a run that
    started over (or rewound) forgets a best from epochs it no longer has.
    """

    def __init__(self, path: Path, *, initial_epoch: int = 0) -> None:
        self.path = path
        prior = read_best(path)
        self.best = prior if prior is not None and prior.epoch <= initial_epoch else None

    def offer(self, epoch: int, val_loss: float | None) -> Best | None:
        """The new best if epoch ``epoch`` (1-based) improves on the best; None if not."""
        if val_loss is None or not math.isfinite(val_loss):
            return None
        if self.best is not None and val_loss >= self.best.val_loss:
            return None
        self.best = Best(epoch, float(val_loss))
        return self.best

    def save(self, model: keras.Model, best: Best, fence: Callable[[], bool] | None = None) -> bool:
        """Write ``model``'s weights as ``best``; a failure is logged: a lost
        best model must never stop training. False when not written."""
        try:
            return save_best(model, self.path, best, fence)
        except Exception as exc:
            log.warning("could not save the weights of epoch %d: %s", best.epoch, exc)
            return False
