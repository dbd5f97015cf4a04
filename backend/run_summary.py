"""A run's summary: what the runs list shows and sorts by, kept on the run's row.

Best val_loss and val_accuracy with their epochs, training seconds and
images/s, worked out from the run's own epoch rows whenever they change
(``backend.runs`` calls ``refresh`` in the transaction that changed them:
recorded, appended or rewound). The list reads the columns, so a page of
10,000 runs never reads a metric row; migration 0005 fills them once for the
runs made before.

Pure over the values (``summarise``) so the migration uses the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.db import EpochMetrics, Run

# The Run columns ``summarise`` fills (backend.db.Run), in one place.
COLUMNS = (
    "best_val_loss",
    "best_val_loss_epoch",
    "best_val_accuracy",
    "best_val_accuracy_epoch",
    "duration_s",
    "images_per_sec",
)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def summarise(epochs: Iterable[tuple[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """The summary columns of a run whose epochs are (number, values):
    lowest finite val_loss and highest val_accuracy (the earliest epoch on a
    tie), the sum of the epochs' ``seconds`` and the mean of their
    ``images_per_sec``; None for what no epoch has."""
    found: dict[str, Any] = dict.fromkeys(COLUMNS)
    seconds: list[float] = []
    rates: list[float] = []
    for epoch, values in sorted(epochs, key=lambda item: item[0]):
        loss, acc = _finite(values.get("val_loss")), _finite(values.get("val_accuracy"))
        if loss is not None and (found["best_val_loss"] is None or loss < found["best_val_loss"]):
            found["best_val_loss"], found["best_val_loss_epoch"] = loss, epoch
        if acc is not None and (
            found["best_val_accuracy"] is None or acc > found["best_val_accuracy"]
        ):
            found["best_val_accuracy"], found["best_val_accuracy_epoch"] = acc, epoch
        if (spent := _finite(values.get("seconds"))) is not None:
            seconds.append(spent)
        if (rate := _finite(values.get("images_per_sec"))) is not None:
            rates.append(rate)
    if seconds:
        found["duration_s"] = sum(seconds)
    if rates:
        found["images_per_sec"] = sum(rates) / len(rates)
    return found


def refresh(session: Session, run_id: str) -> dict[str, Any]:
    """Write the run's summary from its epoch rows as this session sees them
    (inside the caller's transaction, which commits); returns it."""
    rows = session.execute(
        select(EpochMetrics.epoch, EpochMetrics.values).where(EpochMetrics.run_id == run_id)
    )
    found = summarise((epoch, values) for epoch, values in rows)
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(**found)
        .execution_options(synchronize_session=False)
    )
    return found
