"""Rules about what the gap between validation and training loss is made of:
BatchNorm lag, the train-mode effect, overfitting."""

from __future__ import annotations

import math
from typing import Any

from backend.diagnosis.findings import Finding
from backend.diagnosis.gap import decompose
from backend.diagnosis.history import History, num, pct, value
from backend.diagnosis.run_facts import RunFacts

# Loss differences under 0.1 nats (the right class's probability changing by
# about 10%) are within what a reshuffle moves: not worth a finding.
MIN_GAP = 0.1
# BatchNorm lag that is at least half of the gap is the gap's main part.
BN_LAG_SHARE = 0.5
# Critical when nearly all of a large gap is lag: the curve says nothing
# about the model until the averages catch up.
BN_LAG_CRITICAL_SHARE = 0.8
BN_LAG_CRITICAL_NATS = 0.5
# A suggested momentum leaves at most 5% of the initial values after one epoch.
TARGET_INIT_WEIGHT = 0.05
MOMENTUM_CHOICES = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5)
# Validation this far (5%) below the reported training loss gets explained.
TRAIN_MODE_SHARE = 0.05
# Overfitting: val_loss up for at least 3 epochs after its best, by at least
# 0.05 nats and 10%, so one noisy epoch is not called a trend.
OVERFIT_EPOCHS = 3
OVERFIT_MIN_RISE = 0.05
OVERFIT_REL_RISE = 0.1
# Layers named in the evidence before "and N more".
NAMED_LAYERS = 3


def steps_per_epoch(history: History, facts: RunFacts) -> int | None:
    if facts.steps_per_epoch:
        return facts.steps_per_epoch
    # Without them, bn_init_weight = momentum ** steps tells them (the
    # slowest layer's momentum: the one the client's weight follows).
    momentum = facts.bn_momentum
    for row in history:
        weight = value(row, "bn_init_weight")
        if weight and momentum is not None and 0 < momentum < 1 and 0 < weight < 1:
            return max(1, round(math.log(weight) / math.log(momentum) / row["epoch"]))
    return None


def momentum_patch(steps: int | None, facts: RunFacts) -> dict[str, Any]:
    """The largest momentum below the current one whose averages forget the
    initial values within an epoch; failing that, smaller batches (more steps)."""
    current = facts.bn_momentum
    if current is None:  # the layers' momenta are unknown: no number to suggest
        return {}
    lower = [m for m in MOMENTUM_CHOICES if m < current]
    if steps is None:
        return {"bn_momentum": 0.9} if current > 0.9 else {}
    for momentum in lower:
        if momentum**steps <= TARGET_INIT_WEIGHT:
            return {"bn_momentum": momentum}
    if lower:
        return {"bn_momentum": lower[-1]}
    batch = facts.batch_size
    return {"batch_size": max(1, batch // 2)} if batch is not None and batch > 1 else {}


def momentum_text(facts: RunFacts) -> str:
    """The momentum as the run's own code names it: the config's one value, or
    the user's BatchNormalization layers (which of them, when they differ)."""
    if not facts.external:
        return f"momentum {facts.bn_momentum:g}"
    by_momentum: dict[float, list[str]] = {}
    for name, momentum in facts.bn_layers:
        by_momentum.setdefault(momentum, []).append(name)
    if not by_momentum:
        return "your BatchNormalization layers"
    if len(by_momentum) == 1:
        return f"your BatchNormalization layers, momentum {facts.bn_momentum:g}"
    groups = []
    for momentum, names in sorted(by_momentum.items(), reverse=True):
        named = ", ".join(names[:NAMED_LAYERS])
        if len(names) > NAMED_LAYERS:
            named += f" and {len(names) - NAMED_LAYERS} more"
        groups.append(f"momentum {momentum:g} in {named}")
    return (
        f"your BatchNormalization layers: {'; '.join(groups)}; the slowest, "
        f"{facts.bn_momentum:g}, lags most"
    )


def batchnorm_lag(history: History, facts: RunFacts) -> Finding | None:
    if not facts.batch_norm:
        return None
    lagging = [
        (row.epoch, row.gap, row.bn_lag)
        for row in decompose(history, batch_norm=True)
        if row.gap is not None
        and row.bn_lag is not None
        and row.gap >= MIN_GAP
        and row.bn_lag >= max(MIN_GAP, BN_LAG_SHARE * row.gap)
    ]
    if not lagging:
        return None
    epoch, gap, lag = max(lagging, key=lambda item: item[1])  # the widest gap
    stored = next(row for row in history if row["epoch"] == epoch)
    share = lag / gap
    critical = share >= BN_LAG_CRITICAL_SHARE and lag >= BN_LAG_CRITICAL_NATS
    how_much = "all" if share >= 1 else pct(share)
    val_loss, loss = value(stored, "val_loss"), value(stored, "loss")
    recalibrated = value(stored, "val_loss_recalibrated")
    evidence = (
        f"at epoch {epoch}, {how_much} of the gap between val_loss {num(val_loss or 0)} "
        f"and loss {num(loss or 0)} disappears when BatchNorm statistics are re-estimated "
        f"from training images (val_loss {num(recalibrated or 0)}"
    )
    accuracy, recal_accuracy = (
        value(stored, "val_accuracy"),
        value(stored, "val_accuracy_recalibrated"),
    )
    if accuracy is not None and recal_accuracy is not None and num(accuracy) != num(recal_accuracy):
        evidence += f", val_accuracy {num(recal_accuracy)} instead of {num(accuracy)}"
    evidence += ")"
    weight = value(stored, "bn_init_weight")
    if weight is not None and facts.bn_momentum is not None:
        evidence += (
            f"; the moving averages still carry {pct(weight)} of their initial values "
            f"({momentum_text(facts)})"
        )
    elif facts.external and facts.bn_layers:
        evidence += f" ({momentum_text(facts)})"
    return Finding(
        code="batchnorm_lag",
        severity="critical" if critical else "warning",
        title="BatchNorm's moving averages lag behind the model",
        evidence=evidence,
        suggestion=momentum_patch(steps_per_epoch(history, facts), facts),
    )


def train_mode_gap(history: History, facts: RunFacts) -> Finding | None:
    below = [
        row
        for row in history
        if (loss := value(row, "loss")) is not None
        and (val_loss := value(row, "val_loss")) is not None
        and val_loss < loss * (1 - TRAIN_MODE_SHARE)
    ]
    if not below:
        return None
    focus = min(below, key=lambda row: row["val_loss"] / row["loss"])
    causes = ["a running mean over the epoch's batches, taken while the weights still moved"]
    rates = sorted(set(facts.dropout_rates))
    if rates:
        causes.append(f"with dropout {', '.join(f'{rate:g}' for rate in rates)} on")
    if facts.augmented:
        causes.append("on augmented images")
    evidence = (
        f"at epoch {focus['epoch']}, val_loss {num(focus['val_loss'])} is below the reported "
        f"training loss {num(focus['loss'])}: that loss is {', '.join(causes)}; val_loss is "
        "measured once, at the epoch's end, in inference mode"
    )
    train_eval = value(focus, "train_eval_loss")
    if train_eval is not None:
        evidence += f". Measured the same way, the training sample scores {num(train_eval)}"
    return Finding(
        code="train_mode_gap",
        severity="info",
        title="Validation below training loss: the two are measured differently",
        evidence=evidence,
    )


def overfitting(history: History, facts: RunFacts) -> Finding | None:
    rows = [
        row
        for row in history
        if value(row, "val_loss") is not None and value(row, "loss") is not None
    ]
    if len(rows) <= OVERFIT_EPOCHS:
        return None
    best = min(rows, key=lambda row: row["val_loss"])
    last = rows[-1]
    if last["epoch"] - best["epoch"] < OVERFIT_EPOCHS:
        return None
    rise = last["val_loss"] - best["val_loss"]
    if rise < max(OVERFIT_MIN_RISE, OVERFIT_REL_RISE * best["val_loss"]):
        return None
    if last["loss"] >= best["loss"]:
        return None  # training got worse too: not the model memorising
    gap_then, gap_now = best["val_loss"] - best["loss"], last["val_loss"] - last["loss"]
    if gap_now <= gap_then:
        return None
    evidence = (
        f"val_loss rose from {num(best['val_loss'])} at epoch {best['epoch']} (its best) to "
        f"{num(last['val_loss'])} at epoch {last['epoch']} while the training loss fell from "
        f"{num(best['loss'])} to {num(last['loss'])}; the gap grew from {num(gap_then)} to "
        f"{num(gap_now)}"
    )
    recal_then, recal_now = (
        value(best, "val_loss_recalibrated"),
        value(last, "val_loss_recalibrated"),
    )
    if facts.batch_norm and recal_then is not None and recal_now is not None:
        if recal_now <= recal_then:
            return None  # the rise is BatchNorm's, and batchnorm_lag says so
        evidence += (
            f", and re-estimated BatchNorm statistics do not remove it (val_loss "
            f"{num(recal_then)} → {num(recal_now)})"
        )
    patch: dict[str, Any] = {}
    if facts.dropout == 0:
        patch["dropout"] = 0.25
    # An external run does not say which callbacks it has: suggested all the same.
    if facts.early_stopping_patience is None:
        patch["early_stopping_patience"] = OVERFIT_EPOCHS
    if not patch:
        augment = facts.augment
        patch["augment"] = {
            **augment.model_dump(),
            "rotate": max(augment.rotate, 0.03),
            "zoom": max(augment.zoom, 0.1),
        }
    return Finding(
        code="overfitting",
        severity="warning",
        title="Overfitting: validation loss rises while training loss falls",
        evidence=evidence,
        suggestion=patch,
    )
