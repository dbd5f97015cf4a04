"""A run's life in SQL and on its event stream: one place for every transition.

The only writer of a run's metric rows, too: every change to them moves
``Run.metrics_version`` in the same transaction (GET /metrics keys on it).

The API creates and cancels runs; the worker marks them running, records
epochs and finishes them. Each status change is written to SQL first (the
record), then published to the run's stream (the live view); a Redis failure
is logged and never loses the SQL record.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from backend import events
from backend.db import BatchMetrics, Dataset, EpochMetrics, Run, utcnow
from backend.train_config import TrainConfig

log = logging.getLogger(__name__)


def publish_quietly(
    redis: Redis | None, run_id: str, event: dict[str, Any], maxlen: int = 100_000
) -> str | None:
    """Publish an event; a failing side channel warns, never breaks the caller."""
    if redis is None:
        return None
    try:
        return events.publish(redis, run_id, event, maxlen=maxlen)
    except RedisError as exc:
        log.warning("could not publish %s event of run %s: %s", event["type"], run_id, exc)
        return None


def create_run(session: Session, dataset: Dataset, config: TrainConfig, name: str | None) -> Run:
    run = Run(
        dataset_id=dataset.id,
        class_names=[c["name"] for c in dataset.classes],
        config=config.model_dump(mode="json"),
        name=name or "",
    )
    session.add(run)
    session.flush()
    if not run.name:
        run.name = f"{config.optimizer} lr={config.learning_rate:g} bs={config.batch_size}"
    session.commit()
    return run


def mark_running(session: Session, redis: Redis | None, run_id: str) -> Run | None:
    """Start (or resume) a run; None when there is nothing to do: the run is
    gone, already final, or was cancelled while it waited in the queue."""
    run = session.get(Run, run_id)
    if run is None or run.status in events.FINAL_STATUSES:
        return None
    if redis is not None and cancel_requested(redis, run_id):
        finish(session, redis, run_id, "cancelled")
        return None
    resumed = run.status == "running" or run.epochs_done > 0
    run.status = "running"
    run.attempt += 1  # a trainer of an earlier delivery can record no more
    run.started_at = run.started_at or utcnow()
    if resumed:
        run.resumed_at_epoch = run.epochs_done + 1
    session.commit()
    extra = {"resumed_at_epoch": run.resumed_at_epoch} if resumed else {}
    publish_quietly(redis, run_id, events.status_event("running", **extra))
    return run


def record_epoch(
    session: Session,
    run_id: str,
    epoch: int,
    values: dict[str, Any],
    batches: list[tuple[int, float, dict[str, Any]]],
    attempt: int | None = None,
) -> bool:
    """Store one finished epoch and its batch points in one transaction.

    Refused (False) unless the epoch is past the run's ``epochs_done`` and
    ``attempt`` is the run's (``mark_running`` counts the deliveries that
    train it; None: rows written outside a worker, as tests and benchmarks
    do). That is the fence against a stale trainer, one frozen past its
    lease while another worker took the run on (worker/lease.py): none of
    its late epochs is stored, nor, the recorder writing files only after
    SQL took the epoch, its checkpoint. One conditional UPDATE decides, so
    two writers of the same epoch cannot both pass.
    """
    fence = [Run.id == run_id, Run.epochs_done < epoch]
    if attempt is not None:
        fence.append(Run.attempt == attempt)
    moved = session.execute(
        update(Run).where(*fence).values(epochs_done=epoch, metrics_version=Run.metrics_version + 1)
    )
    if not getattr(moved, "rowcount", 0):
        session.rollback()
        log.warning(
            "run %s: epoch %d is behind the record or of an earlier delivery; not stored",
            run_id,
            epoch,
        )
        return False
    # Rows of an interrupted attempt at this epoch (none in the usual case).
    session.execute(
        delete(EpochMetrics).where(EpochMetrics.run_id == run_id, EpochMetrics.epoch >= epoch)
    )
    if batches:
        first_step = batches[0][0]
        session.execute(
            delete(BatchMetrics).where(
                BatchMetrics.run_id == run_id, BatchMetrics.step >= first_step
            )
        )
    session.add(EpochMetrics(run_id=run_id, epoch=epoch, values=values))
    session.add_all(
        BatchMetrics(run_id=run_id, step=step, epoch=at, values=vals) for step, at, vals in batches
    )
    # Its holder lost Redis long enough for a sweeper to requeue it, then took
    # its lease back: it still trains the run.
    session.execute(
        update(Run).where(Run.id == run_id, Run.status == "queued").values(status="running")
    )
    session.commit()
    return True


def requeue(session: Session, redis: Redis | None, run_id: str, reason: str | None = None) -> bool:
    """Put a running run back in the queue's state; it resumes after its last
    recorded epoch when a worker takes it again. False when it was not
    running (finished, or already queued by someone else): one UPDATE decides,
    so two sweepers never both requeue it."""
    changed = session.execute(
        update(Run).where(Run.id == run_id, Run.status == "running").values(status="queued")
    )
    session.commit()
    if not getattr(changed, "rowcount", 0):
        return False
    run = session.get(Run, run_id)
    if run is None:
        return False
    session.refresh(run)
    extra: dict[str, Any] = {"epochs_done": run.epochs_done, "requeued": True}
    if reason:
        extra["reason"] = reason
    publish_quietly(redis, run_id, events.status_event("queued", **extra))
    return True


def unqueue(session: Session, run_id: str) -> None:
    """Undo a ``requeue`` whose message could not be sent: running again, so
    that the next lease sweep tries once more."""
    session.execute(
        update(Run).where(Run.id == run_id, Run.status == "queued").values(status="running")
    )
    session.commit()


def rewind(session: Session, redis: Redis | None, run_id: str, epoch: int) -> None:
    """Forget the run's epochs after ``epoch``: it resumes from the checkpoint
    of that epoch (0: it starts over, its checkpoints lost).

    An epoch is recorded and published before its checkpoint is written (the
    live view does not wait for the file), so a worker that died in between
    leaves SQL one epoch ahead of the newest checkpoint; that epoch is
    trained again. The status event says from which epoch on the curves are
    replaced (``resumed_at_epoch``), for clients that already had them."""
    session.execute(
        delete(EpochMetrics).where(EpochMetrics.run_id == run_id, EpochMetrics.epoch > epoch)
    )
    # A batch point's epoch is fractional: those of epoch k lie in (k-1, k].
    session.execute(
        delete(BatchMetrics).where(BatchMetrics.run_id == run_id, BatchMetrics.epoch > epoch)
    )
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(
            epochs_done=epoch,
            resumed_at_epoch=epoch + 1 if epoch > 0 else None,
            metrics_version=Run.metrics_version + 1,
        )
    )
    session.commit()
    publish_quietly(redis, run_id, events.status_event("running", resumed_at_epoch=epoch + 1))


def finish(
    session: Session,
    redis: Redis | None,
    run_id: str,
    status: str,
    error: str | None = None,
    attempt: int | None = None,
) -> bool:
    """Mark the run final and say so on its stream. With ``attempt`` (a
    worker's delivery, see ``record_epoch``), only while no later delivery
    started training it: False, and nothing written, otherwise."""
    if status not in events.FINAL_STATUSES:
        raise ValueError(f"{status!r} is not a final status")
    fence = [Run.id == run_id]
    if attempt is not None:
        fence.append(Run.attempt == attempt)
    changed = session.execute(
        update(Run).where(*fence).values(status=status, error=error, finished_at=utcnow())
    )
    session.commit()
    if not getattr(changed, "rowcount", 0):
        if attempt is not None and session.get(Run, run_id) is not None:
            log.warning("run %s: a later delivery trains it; not marked %s", run_id, status)
        return False
    run = session.get(Run, run_id)
    if run is None:
        return False
    session.refresh(run)
    extra: dict[str, Any] = {"epochs_done": run.epochs_done}
    if error:
        extra["error"] = error
    publish_quietly(redis, run_id, events.status_event(status, **extra))
    if redis is not None:
        with suppress(RedisError):
            redis.delete(events.cancel_key(run_id))
    return True


def request_cancel(session: Session, redis: Redis | None, run: Run) -> Run:
    """A queued run is cancelled at once; a running one at its next batch,
    when the worker sees the flag."""
    if run.status in events.FINAL_STATUSES:
        return run
    if redis is not None:
        # Set for both: a queued run may be picked up by a worker right now.
        redis.set(events.cancel_key(run.id), "1", ex=7 * 24 * 3600)
    if run.status == "queued":
        finish(session, redis, run.id, "cancelled")
        session.refresh(run)
    return run


def cancel_requested(redis: Redis, run_id: str) -> bool:
    try:
        return bool(redis.exists(events.cancel_key(run_id)))
    except RedisError:
        return False


def epoch_rows(session: Session, run_id: str, after: int = 0) -> list[dict[str, Any]]:
    """The run's recorded epochs after epoch ``after``, in order."""
    # Columns, not entities: read-only rows need no identity map.
    rows = session.execute(
        select(EpochMetrics.epoch, EpochMetrics.values)
        .where(EpochMetrics.run_id == run_id, EpochMetrics.epoch > after)
        .order_by(EpochMetrics.epoch)
    )
    return [{"epoch": epoch, **values} for epoch, values in rows]


def batch_rows(session: Session, run_id: str) -> list[dict[str, Any]]:
    """The run's batch points, in step order."""
    rows = session.execute(
        select(BatchMetrics.step, BatchMetrics.epoch, BatchMetrics.values)
        .where(BatchMetrics.run_id == run_id)
        .order_by(BatchMetrics.step)
    )
    return [{"step": step, "epoch": epoch, **values} for step, epoch, values in rows]
