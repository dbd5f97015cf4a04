"""Rules about the data the curves come from: a validation set too small to
read, images shared by training and validation, imbalanced classes.

They read the stored dataset (``RunFacts.dataset``): a run without one (an
external run, or a worker run whose dataset was deleted) gets none of them."""

from __future__ import annotations

import itertools
import math
from typing import Any

from backend.datasets.summary import IMBALANCE_RATIO
from backend.diagnosis.findings import Finding
from backend.diagnosis.history import History, num, pct, value
from backend.diagnosis.run_facts import RunFacts

# A validation set whose accuracy has a standard error of 2 points or more
# cannot tell a 2-point improvement from a reshuffle of luck.
NOISY_SE = 0.02
# A warning only when validation is very small (under about a hundred images
# at mid accuracy): below that, noise hides real differences between runs and
# epochs. Between the two, it is worth knowing, not a problem (info): a
# healthy run on a modest dataset must not read as a warning.
NOISY_SE_WARNING = 0.05
# Differences under two standard errors are within noise (≈95% interval).
NOISE_Z = 2.0
# A suggested validation_split never holds out more than half the data.
MAX_SUGGESTED_SPLIT = 0.5
# 5% of validation seen in training inflates val_accuracy by up to 5 points.
LEAK_CRITICAL_SHARE = 0.05
# val_accuracy within 2 points of always answering the largest class.
MAJORITY_MARGIN = 0.02


def accuracy_standard_error(accuracy: float, images: int) -> float:
    """Binomial standard error, "plus four" (Agresti–Coull): never 0 at 0% or 100%."""
    p = (accuracy * images + 2) / (images + 4)
    return math.sqrt(p * (1 - p) / (images + 4))


def noisy_validation(history: History, run: RunFacts) -> Finding | None:
    facts = run.dataset
    if facts is None or not facts.val_images or not facts.class_counts:
        return None
    size = facts.val_images
    accuracies = [
        (int(row["epoch"]), accuracy)
        for row in history
        if (accuracy := value(row, "val_accuracy")) is not None
    ]
    if not accuracies:
        return None
    last = accuracies[-1][1]
    error = accuracy_standard_error(last, size)
    if error < NOISY_SE:
        return None
    # Changes of less than half an image are float noise, not a change.
    changes = [
        (epoch, before, after)
        for (_, before), (epoch, after) in itertools.pairwise(accuracies)
        if abs(after - before) >= 0.5 / size
    ]
    within = [change for change in changes if abs(change[2] - change[1]) < NOISE_Z * error]
    p = (last * size + 2) / (size + 4)
    needed = math.ceil(p * (1 - p) / NOISY_SE**2)
    evidence = (
        f"validation has {size} images, so one image moves val_accuracy by "
        f"{100 / size:.1f} points; at val_accuracy {num(last)} its standard error is "
        f"±{num(error)}"
    )
    if within:
        epoch, before, after = within[-1]
        evidence += (
            f"; {len(within)} of {len(changes)} epoch-to-epoch changes (e.g. {num(before)} → "
            f"{num(after)} at epoch {epoch}) are smaller than two standard errors: noise, "
            "not progress"
        )
    evidence += f". About {needed} validation images would bring it to ±{NOISY_SE:g}"
    patch: dict[str, Any] = {}
    share = math.ceil(20 * needed / sum(facts.class_counts)) / 20  # up to a multiple of 0.05
    if run.validation_split is not None and run.validation_split < share <= MAX_SUGGESTED_SPLIT:
        patch["validation_split"] = share
    return Finding(
        code="noisy_validation",
        severity="warning" if within and error >= NOISY_SE_WARNING else "info",
        title="The validation set is too small for the differences seen",
        evidence=evidence,
        suggestion=patch,
    )


def data_leakage(history: History, run: RunFacts) -> Finding | None:
    facts = run.dataset
    if facts is None or not facts.leaked or not facts.val_images:
        return None
    share = facts.leaked / facts.val_images
    return Finding(
        code="data_leakage",
        severity="critical" if share >= LEAK_CRITICAL_SHARE else "warning",
        title="Validation images also appear in training",
        evidence=(
            f"{facts.leaked} of {facts.val_images} validation images ({pct(share)}) have the "
            "same bytes (SHA-1) as a training image: validation scores them as already seen, "
            "so val_loss and val_accuracy look better than on new images. Remove the duplicates "
            "from the dataset"
        ),
    )


def class_imbalance(history: History, run: RunFacts) -> Finding | None:
    facts = run.dataset
    counts = facts.class_counts if facts else None
    if facts is None or not counts or len(counts) < 2:
        return None
    largest = max(range(len(counts)), key=counts.__getitem__)
    smallest = min(range(len(counts)), key=counts.__getitem__)
    ratio = counts[largest] / max(counts[smallest], 1)
    if ratio <= IMBALANCE_RATIO:
        return None
    names = facts.class_names
    majority = counts[largest] / sum(counts)
    evidence = (
        f"{names[largest]!r} has {counts[largest]} images and {names[smallest]!r} "
        f"{counts[smallest]} ({ratio:.1f}×); always answering {names[largest]!r} scores "
        f"accuracy {num(majority)}"
    )
    accuracy = value(history[-1], "val_accuracy") if history else None
    stuck = accuracy is not None and accuracy <= majority + MAJORITY_MARGIN
    if accuracy is not None:
        evidence += f", and val_accuracy is {num(accuracy)}"
        if stuck:
            evidence += ": the model may have learned little more than that"
    return Finding(
        code="class_imbalance",
        severity="warning" if stuck else "info",
        title="The classes are imbalanced",
        evidence=evidence,
    )
