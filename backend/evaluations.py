"""What a finished run's model gets right and wrong: its evaluation on the
validation split, one SQL row per set of weights.

The worker (``worker/training/evaluation.py``) evaluates two models at the end
of a run: the final one and the best epoch's (lowest val_loss). The body is
the JSON the API serves: accuracy, loss, per-class precision/recall/F1/support,
the confusion matrix (rows = true class, columns = predicted) and the most
confident mistakes. Which weights a client gets unless it asks is decided
here, once, for the evaluation, the model download and predict alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from backend import artifacts, events
from backend.db import Evaluation, Run

Weights = Literal["best", "final"]
WEIGHTS: tuple[Weights, ...] = get_args(Weights)


def store(
    session: Session,
    run_id: str,
    weights: Weights,
    epoch: int,
    body: dict[str, Any],
    attempt: int | None = None,
) -> bool:
    """Record (or replace: a redelivered run evaluates again) one evaluation.

    With ``attempt`` (a worker's delivery, see ``runs.record_epoch``), only
    while it is the run's current one and the run not final: False, and
    nothing written, otherwise; a stale trainer never replaces the rows of
    the delivery that finished the run. The fence is a conditional UPDATE of
    the run's row in the same transaction, so it holds the row (PostgreSQL)
    or the database (SQLite) until the rows are in: a later delivery's start
    waits for it, and its own evaluation replaces these rows."""
    if attempt is not None:
        held = session.execute(
            update(Run)
            .where(
                Run.id == run_id,
                Run.attempt == attempt,
                Run.status.not_in(events.FINAL_STATUSES),
            )
            .values(attempt=Run.attempt)
        )
        if not getattr(held, "rowcount", 0):
            session.rollback()
            return False
    session.execute(
        delete(Evaluation).where(Evaluation.run_id == run_id, Evaluation.weights == weights)
    )
    session.add(Evaluation(run_id=run_id, weights=weights, epoch=epoch, body=body))
    session.commit()
    return True


def stored(session: Session, run_id: str) -> dict[str, Evaluation]:
    """The run's evaluations by weights ("best", "final")."""
    rows = session.scalars(select(Evaluation).where(Evaluation.run_id == run_id))
    return {row.weights: row for row in rows}


def default_weights(runs_dir: Path, run_id: str) -> Weights | None:
    """The best epoch's model when the run kept one, else the final model;
    None when the run has no model at all."""
    folder = artifacts.run_dir(runs_dir, run_id)
    for weights in WEIGHTS:
        if (folder / artifacts.MODEL_FILES[weights]).is_file():
            return weights
    return None


def model_path(runs_dir: Path, run_id: str, weights: Weights) -> Path:
    return artifacts.run_dir(runs_dir, run_id) / artifacts.MODEL_FILES[weights]
