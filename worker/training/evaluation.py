"""Evaluation at the end of a run: what the final model and the best epoch's
model get right and wrong on the validation split.

``evaluate_run`` is what the runner calls once a run has trained; it predicts
the validation images through the same tf.data pipeline that validated every
epoch, so its accuracy is Keras's ``val_accuracy`` of those weights.
``summarize`` is numpy only: per-class precision, recall, F1 and support,
accuracy, loss, the confusion matrix (rows = true class, columns = predicted)
and the most confident mistakes.

Fenced like every write of a trainer (worker/training/fence.py): rows are
stored only under the run's current attempt, and ``best.keras`` is renamed
into place only while the attempt holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from numpy.typing import NDArray

from backend import artifacts as names
from backend import evaluations
from backend.datasets.layout import ImageEntry
from backend.db import Database, Run
from backend.settings import Settings
from worker.training import artifacts
from worker.training.best import best_model, read_best
from worker.training.fence import Fence

log = logging.getLogger(__name__)

MISTAKES = 12  # the most confident ones are kept
_EPSILON = 1e-7  # Keras clips probabilities so before its cross-entropy


def summarize(
    probabilities: NDArray[np.floating],
    labels: NDArray[np.integer],
    classes: Sequence[str],
    images: Sequence[tuple[int, str]],
    mistakes: int = MISTAKES,
) -> dict[str, Any]:
    """The evaluation body of predicted ``probabilities`` (images × classes)
    against true ``labels``; ``images`` are the (manifest index, path) of each
    row, naming the mistakes."""
    scores = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(labels, dtype=np.int64)
    count, width = scores.shape
    if width != len(classes) or len(truth) != count or len(images) != count:
        raise ValueError(
            f"{count} predictions of {width} classes for {len(labels)} labels, "
            f"{len(images)} images and {len(classes)} classes"
        )
    if count == 0:
        raise ValueError("no validation images to evaluate on")
    predicted = scores.argmax(axis=1)
    confusion = np.zeros((width, width), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    hits = np.diag(confusion)
    support, claimed = confusion.sum(axis=1), confusion.sum(axis=0)
    per_class: list[dict[str, Any]] = []
    f1s: list[float] = []
    for index, name in enumerate(classes):
        precision = _ratio(hits[index], claimed[index])
        recall = _ratio(hits[index], support[index])
        f1 = _f1(precision, recall)
        if f1 is not None:
            f1s.append(f1)
        per_class.append(
            {
                "name": name,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": int(support[index]),
            }
        )
    true_probability = scores[np.arange(count), truth]
    return {
        "images": count,
        "accuracy": float(hits.sum() / count),
        "loss": float(-np.log(np.clip(true_probability, _EPSILON, 1 - _EPSILON)).mean()),
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "classes": list(classes),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "mistakes": _mistakes(scores, truth, predicted, classes, images, mistakes),
    }


def _ratio(part: np.integer, whole: np.integer) -> float | None:
    return float(part / whole) if whole else None  # undefined, not 0


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    total = precision + recall
    return 2 * precision * recall / total if total else 0.0


def _mistakes(
    probabilities: NDArray[np.float64],
    labels: NDArray[np.int64],
    predicted: NDArray[np.int64],
    classes: Sequence[str],
    images: Sequence[tuple[int, str]],
    limit: int,
) -> list[dict[str, Any]]:
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    # Most confident first; equal confidences in validation order.
    order = wrong[np.argsort(-confidence, kind="stable")][:limit]
    return [
        {
            "index": images[row][0],
            "path": images[row][1],
            "true": classes[labels[row]],
            "predicted": classes[predicted[row]],
            "confidence": float(probabilities[row, predicted[row]]),
            "true_probability": float(probabilities[row, labels[row]]),
        }
        for row in order
    ]


def evaluate_model(
    model: keras.Model,
    val_data: Any,  # the run's validation tf.data.Dataset, in ``val_idx`` order
    images: Sequence[ImageEntry],
    val_idx: Sequence[int],
    classes: Sequence[str],
) -> dict[str, Any]:
    probabilities = model.predict(val_data, verbose=0)
    labels = np.array([images[i].label for i in val_idx], dtype=np.int64)
    return summarize(probabilities, labels, classes, [(int(i), images[i].path) for i in val_idx])


def evaluate_run(
    run_id: str,
    model: keras.Model,
    val_data: Any,
    images: Sequence[ImageEntry],
    val_idx: Sequence[int],
    settings: Settings,
    db: Database,
    fence: Fence | None = None,
) -> list[str]:
    """Evaluate the final ``model`` and the best epoch's weights, store each,
    and make the best weights a whole model (``best.keras``) for download and
    predict. Returns which were stored; a failure is logged, never raised:
    the run has trained, and keeps its curves and model either way. A fenced
    write (the run is another's now) stops it, ``fence.lost`` set."""
    fence = fence if fence is not None else Fence(db, run_id, None)
    with db.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            return []
        classes, final_epoch = list(run.class_names), run.epochs_done
    if len(classes) != model.output_shape[-1]:
        classes = [str(label) for label in range(model.output_shape[-1])]
    folder = artifacts.run_dir(settings, run_id)
    done: list[str] = []
    try:
        body = evaluate_model(model, val_data, images, val_idx, classes)
        with db.session() as session:
            stored = evaluations.store(
                session, run_id, "final", final_epoch, body, attempt=fence.attempt
            )
        if not stored:
            fence.give_up("its evaluation was refused")
            return done
        done.append("final")
    except Exception:
        log.exception("run %s: could not evaluate the final model", run_id)
    best = read_best(folder / names.BEST_WEIGHTS_FILE)
    if best is None or fence.lost.is_set():
        return done
    try:
        kept = best_model(model, folder / names.BEST_WEIGHTS_FILE)
        body = evaluate_model(kept, val_data, images, val_idx, classes)
        # The file first: a stored "best" evaluation always has its model.
        if not artifacts.save_model(kept, folder / names.BEST_MODEL_FILE, fence=fence.holds):
            return done
        with db.session() as session:
            stored = evaluations.store(
                session, run_id, "best", best.epoch, body, attempt=fence.attempt
            )
        if not stored:
            fence.give_up("its evaluation was refused")
            return done
        done.append("best")
    except Exception:
        log.exception("run %s: could not evaluate the weights of epoch %d", run_id, best.epoch)
    return done
