"""What a sweep shows: its runs ranked by their best value of its metric
(direction-aware, runs without a value last), the knobs' values each tried,
and its counts by status (GET /api/sweeps)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend import sweep_space
from backend.api.sweep_schemas import SweepPublic, SweepRun, Variant
from backend.db import EpochMetrics, Run, Sweep
from backend.train_config import read_stored_config


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def best_values(session: Session, sweep: Sweep, run_ids: list[str]) -> dict[str, float | None]:
    """Each run's best value of the sweep's metric over its epochs: the
    summary columns for val_loss and val_accuracy, the epoch rows otherwise."""
    if not run_ids:
        return {}
    column = {"val_loss": Run.best_val_loss, "val_accuracy": Run.best_val_accuracy}.get(
        sweep.metric
    )
    if column is not None:
        found = session.execute(select(Run.id, column).where(Run.id.in_(run_ids)))
        return {run_id: _finite(value) for run_id, value in found}
    pick = max if sweep.direction == "maximize" else min
    best: dict[str, float | None] = dict.fromkeys(run_ids)
    rows = session.execute(
        select(EpochMetrics.run_id, EpochMetrics.values).where(EpochMetrics.run_id.in_(run_ids))
    )
    for run_id, values in rows:
        value = _finite(values.get(sweep.metric)) if isinstance(values, dict) else None
        if value is not None:
            seen = best[run_id]
            best[run_id] = value if seen is None else pick(seen, value)
    return best


def knob_names(sweep: Sweep) -> list[str]:
    """The knobs a sweep varies: its space's, or every field a variant patches."""
    if sweep.method != "list":
        return list(sweep.space)
    names = dict.fromkeys(name for v in sweep.variants or [] for name in v.get("patch", {}))
    return list(names)


def _label(sweep: Sweep, run: Run) -> str | None:
    if sweep.method != "list" or not sweep.variants:
        return None
    variants = sweep.variants
    if run.trial_number is not None and 0 <= run.trial_number < len(variants):
        return str(variants[run.trial_number]["label"])
    base = read_stored_config(sweep.config).config
    for variant in variants:  # a point enqueued again has a later trial number
        try:
            if sweep_space.apply(base, variant["patch"]).model_dump(mode="json") == run.config:
                return str(variant["label"])
        except ValueError:
            continue
    return None


def _counts_and_best(session: Session, sweep: Sweep) -> tuple[dict[str, int], str | None]:
    """Its runs by status and its best run, read in SQL: a list of sweeps
    of thousands of runs each reads no run rows."""
    counts = {
        status: int(count)
        for status, count in session.execute(
            select(Run.status, func.count()).where(Run.sweep_id == sweep.id).group_by(Run.status)
        )
    }
    column = {"val_loss": Run.best_val_loss, "val_accuracy": Run.best_val_accuracy}.get(
        sweep.metric
    )
    if column is None:  # another epoch metric: only the epoch rows hold it
        ids = list(session.scalars(select(Run.id).where(Run.sweep_id == sweep.id)))
        values = {k: v for k, v in best_values(session, sweep, ids).items() if v is not None}
        pick = max if sweep.direction == "maximize" else min
        return counts, pick(values, key=values.__getitem__) if values else None
    order = column.desc() if sweep.direction == "maximize" else column.asc()
    best = session.scalar(
        select(Run.id)
        .where(Run.sweep_id == sweep.id, column.is_not(None))
        .order_by(order, Run.created_at)
        .limit(1)
    )
    return counts, best


def sweep_public(session: Session, sweep: Sweep, with_runs: bool = True) -> SweepPublic:
    """The sweep with its runs, best first (runs without a value last);
    without them (``with_runs`` False), its counts and best run only."""
    if not with_runs:
        counts, best_id = _counts_and_best(session, sweep)
        return _public(sweep, counts, best_id, [])
    members = list(
        session.scalars(select(Run).where(Run.sweep_id == sweep.id).order_by(Run.created_at))
    )
    values = best_values(session, sweep, [run.id for run in members])
    sign = -1.0 if sweep.direction == "maximize" else 1.0

    def rank(run: Run) -> tuple[bool, float]:
        value = values.get(run.id)
        return value is None, sign * value if value is not None else 0.0

    knobs = knob_names(sweep)
    ranked = sorted(members, key=rank)  # stable: ties keep their creation order
    best = next((run.id for run in ranked if values.get(run.id) is not None), None)
    listed = [
        SweepRun(
            id=run.id,
            name=run.name,
            status=run.status,
            trial_number=run.trial_number,
            label=_label(sweep, run),
            params={k: sweep_space.get_dotted(run.config, k) for k in knobs},
            config=run.config,
            value=values.get(run.id),
            best_val_loss=run.best_val_loss,
            best_val_loss_epoch=run.best_val_loss_epoch,
            best_val_accuracy=run.best_val_accuracy,
            best_val_accuracy_epoch=run.best_val_accuracy_epoch,
            epochs_done=run.epochs_done,
            duration_s=run.duration_s,
            error=run.error,
        )
        for run in ranked
    ]
    return _public(sweep, dict(Counter(run.status for run in members)), best, listed)


def _public(
    sweep: Sweep, counts: dict[str, int], best: str | None, listed: list[SweepRun]
) -> SweepPublic:
    return SweepPublic(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        dataset_id=sweep.dataset_id,
        config=sweep.config,
        space=sweep.space,
        variants=[Variant.model_validate(v) for v in sweep.variants] if sweep.variants else None,
        method=sweep.method,
        max_runs=sweep.max_runs,
        parallel=sweep.parallel,
        metric=sweep.metric,
        direction=sweep.direction,
        prune=sweep.prune,
        options=sweep.options,
        error=sweep.error,
        source_run_id=sweep.source_run_id,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
        counts=counts,
        best_run_id=best,
        runs=listed,
    )
