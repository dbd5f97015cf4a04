"""The gap ``val_loss − loss`` of each epoch, split into what the probes measure.

- train-mode effect: ``train_eval_loss_recalibrated − loss``: the reported
  loss is a running mean in training mode (dropout, batch statistics, earlier
  weights); the training sample evaluated in inference mode, with BatchNorm
  statistics that fit the weights, is not;
- BatchNorm lag: ``val_loss − val_loss_recalibrated``: what re-estimating the
  BatchNorm statistics from training images removes;
- generalisation: the rest, ``val_loss_recalibrated − train_eval_loss_recalibrated``.

The training sample is taken with re-estimated statistics because with the
lagging moving averages (``train_eval_loss``) it carries the same lag as
validation: the lag would be counted twice and the generalisation gap come
out falsely negative. Without BatchNorm both are the same measurement.

The three add up to the gap exactly. A part is None where a probe was off or
the loss was NaN; a model without BatchNorm has no lag (0).
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.diagnosis.history import History, value


@dataclass(frozen=True)
class GapRow:
    epoch: int
    gap: float | None
    train_mode: float | None
    bn_lag: float | None
    generalisation: float | None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def decompose(history: History, batch_norm: bool) -> list[GapRow]:
    rows = []
    for row in history:
        loss, val_loss = value(row, "loss"), value(row, "val_loss")
        gap = _minus(val_loss, loss)
        train_eval = value(row, "train_eval_loss_recalibrated") if batch_norm else None
        if train_eval is None:  # no BatchNorm, or a history from before that probe
            train_eval = value(row, "train_eval_loss")
        train_mode = _minus(train_eval, loss)
        if batch_norm:
            bn_lag = _minus(val_loss, value(row, "val_loss_recalibrated"))
        else:
            bn_lag = 0.0 if val_loss is not None else None
        rest = None
        if gap is not None and train_mode is not None and bn_lag is not None:
            rest = gap - train_mode - bn_lag
        rows.append(GapRow(int(row["epoch"]), gap, train_mode, bn_lag, rest))
    return rows
