"""Rules about how training itself went: too large steps, too little
capacity, too few epochs."""

from __future__ import annotations

import itertools
import math
from typing import Any

from backend.diagnosis.findings import Finding
from backend.diagnosis.history import History, diverged_at, nice, num, value
from backend.diagnosis.run_facts import RunFacts

# A training loss 3× that of guessing uniformly (log of the class count)
# means confident wrong answers: steps large enough to throw the weights out.
EXPLODED_VS_CHANCE = 3.0
# The reported training loss is a mean over an epoch and falls in healthy
# training; 25% above its best so far is divergence, and two rises of 10%
# or more are oscillation.
DIVERGED_RISE = 0.25
OSCILLATION_RISE = 0.1
OSCILLATION_COUNT = 2
# ...and by at least this much in absolute terms: near a loss of zero, a
# wobble from 0.017 to 0.024 is +40% but only noise, not an unstable step size.
MIN_RISE = 0.05
# Underfitting: over the last 3 epochs the training loss improved by less
# than 5%, stayed above half the uniform-guess loss, and training accuracy
# is less than halfway from chance to perfect.
FLAT_EPOCHS = 3
FLAT_REL_CHANGE = 0.05
HIGH_VS_CHANCE = 0.5
LOW_ACCURACY_SHARE = 0.5
# Not converged: val_loss at the last epoch is its best and still fell by
# more than 1% over the epoch before.
STILL_IMPROVING = 0.01
# At or below this learning rate a flat loss is the steps being too small;
# above it, a lack of capacity (or too much dropout).
SMALL_LEARNING_RATE = 1e-4


def _losses(history: History) -> list[tuple[int, float]]:
    return [
        (int(row["epoch"]), loss) for row in history if (loss := value(row, "loss")) is not None
    ]


def _unstable(history: History, num_classes: int | None) -> str | None:
    """Why the learning rate looks too high, or None."""
    nan_epoch = diverged_at(history)
    if nan_epoch is not None:
        return f"the training loss became NaN or infinite at epoch {nan_epoch}"
    losses = _losses(history)
    if not losses:
        return None
    chance = math.log(num_classes) if num_classes and num_classes > 1 else None
    epoch, worst = max(losses, key=lambda item: item[1])
    if chance is not None and worst > EXPLODED_VS_CHANCE * chance:
        return (
            f"the training loss reached {num(worst)} at epoch {epoch}, "
            f"{worst / chance:.0f}× the {num(chance)} of guessing uniformly"
        )
    best = losses[0][1]
    rises = []
    for (_, previous), (epoch, loss) in itertools.pairwise(losses):
        if loss > best * (1 + DIVERGED_RISE) and loss - best > MIN_RISE:
            return (
                f"the training loss rose to {num(loss)} at epoch {epoch}, "
                f"from a best of {num(best)}"
            )
        if loss > previous * (1 + OSCILLATION_RISE) and loss - previous > MIN_RISE:
            rises.append(f"{num(previous)} → {num(loss)} at epoch {epoch}")
        best = min(best, loss)
    if len(rises) >= OSCILLATION_COUNT:
        return "the training loss went up and down: " + ", ".join(rises)
    return None


def lr_too_high(history: History, facts: RunFacts) -> Finding | None:
    why = _unstable(history, facts.num_classes)
    if why is None:
        return None
    rate = facts.learning_rate
    # A schedule (or an optimizer the client could not read) has no one rate to cut.
    setting = [f"learning rate {rate:g}" if rate is not None else "a learning-rate schedule"]
    if facts.optimizer:
        setting.append(facts.optimizer)
    return Finding(
        code="lr_too_high",
        severity="critical" if diverged_at(history) is not None else "warning",
        title="The learning rate looks too high",
        evidence=f"{why} ({', '.join(setting)})",
        suggestion={"learning_rate": nice(rate / 10)} if rate is not None else {},
    )


def underfitting(history: History, facts: RunFacts) -> Finding | None:
    if not facts.num_classes or facts.num_classes < 2 or len(history) < FLAT_EPOCHS:
        return None
    if _unstable(history, facts.num_classes) is not None:
        return None  # lr_too_high explains it
    recent = history[-FLAT_EPOCHS:]
    first_loss, last_loss = value(recent[0], "loss"), value(recent[-1], "loss")
    val_loss = value(recent[-1], "val_loss")
    accuracy = value(recent[-1], "train_eval_accuracy")
    if accuracy is None:
        accuracy = value(recent[-1], "accuracy")
    if first_loss is None or last_loss is None or val_loss is None or accuracy is None:
        return None
    chance_loss, chance_accuracy = math.log(facts.num_classes), 1 / facts.num_classes
    flat = first_loss - last_loss < FLAT_REL_CHANGE * first_loss
    high = min(last_loss, val_loss) > HIGH_VS_CHANCE * chance_loss
    low = accuracy < chance_accuracy + LOW_ACCURACY_SHARE * (1 - chance_accuracy)
    if not (flat and high and low):
        return None
    patch: dict[str, Any] = {}
    if facts.learning_rate is not None and facts.learning_rate <= SMALL_LEARNING_RATE:
        patch = {"learning_rate": nice(facts.learning_rate * 10)}
    elif facts.dropout > 0:
        patch = {"dropout": 0.0}
    else:
        if facts.filters:
            patch["filters"] = [min(2 * f, 2048) for f in facts.filters]
        if facts.dense_units:
            patch["dense_units"] = min(2 * facts.dense_units, 8192)
    return Finding(
        code="underfitting",
        severity="warning",
        title="Underfitting: training and validation loss are both high and flat",
        evidence=(
            f"from epoch {recent[0]['epoch']} to {recent[-1]['epoch']} the training loss went "
            f"from {num(first_loss)} to {num(last_loss)} (guessing uniformly scores "
            f"{num(chance_loss)}), val_loss is {num(val_loss)}, and training accuracy is "
            f"{num(accuracy)} where chance is {num(chance_accuracy)}"
        ),
        suggestion=patch,
    )


def not_converged(history: History, facts: RunFacts) -> Finding | None:
    # Only once the run has had all its epochs: while it trains, the last
    # recorded epoch is not the last one (and without the count, no telling).
    epochs = facts.epochs
    if epochs is None or len(history) < max(2, epochs):
        return None
    before, last = value(history[-2], "val_loss"), value(history[-1], "val_loss")
    losses = [loss for row in history if (loss := value(row, "val_loss")) is not None]
    if before is None or last is None or last > min(losses):
        return None
    if before - last <= STILL_IMPROVING * before:
        return None
    return Finding(
        code="not_converged",
        severity="info",
        title="Still improving at the last epoch",
        evidence=(
            f"val_loss fell from {num(before)} to {num(last)} at the last epoch "
            f"({history[-1]['epoch']}), its best so far: more epochs would likely help"
        ),
        suggestion={"epochs": min(1000, epochs + max(2, epochs // 2))},
    )
