"""A run's life in SQL and on its event stream: one place for every transition.

The only writer of a run's metric rows, too: every change to them moves
``Run.metrics_version`` in the same transaction (GET /metrics keys on it).

The API creates and cancels runs; the worker marks them running, records
epochs and finishes them. An external run (``Run.source`` "keras", a user's
own ``model.fit``: backend/external_runs.py) has its epochs and batch points
appended here too (``append_epochs``, ``append_batches``); no worker ever
starts, requeues or fails one. Each status change is written to SQL first (the
record), then published to the run's stream (the live view); a Redis failure
is logged and never loses the SQL record.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from backend import events, run_summary
from backend.db import BatchMetrics, Dataset, EpochMetrics, Run, RunTag, utcnow
from backend.train_config import TrainConfig

log = logging.getLogger(__name__)

WORKER = "worker"  # Run.source of a run trained here from a TrainConfig
EXTERNAL = "keras"  # Run.source of a user's own model.fit, sent over REST


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


def create_run(
    session: Session,
    dataset: Dataset,
    config: TrainConfig,
    name: str | None,
    *,
    sweep_id: str | None = None,
    trial_number: int | None = None,
) -> Run:
    """A queued run of ``dataset`` (committed); ``sweep_id`` and
    ``trial_number``: the sweep and Optuna trial that made it."""
    run = Run(
        dataset_id=dataset.id,
        class_names=[c["name"] for c in dataset.classes],
        config=config.model_dump(mode="json"),
        name=name or "",
        queued_at=utcnow(),  # the reconciler's clock (worker/reconciler.py)
        sweep_id=sweep_id,
        trial_number=trial_number,
    )
    session.add(run)
    session.flush()
    if not run.name:
        run.name = f"{config.optimizer} lr={config.learning_rate:g} bs={config.batch_size}"
    session.commit()
    return run


def mark_running(
    session: Session, redis: Redis | None, run_id: str, holder: str | None = None
) -> Run | None:
    """Start (or resume) a run; None when there is nothing to do: the run is
    gone, already final, or was cancelled while it waited in the queue.

    The delivery's fencing token, ``Run.attempt``, is taken in one UPDATE …
    RETURNING: two workers starting the run at once get two attempts, and
    only the later one records. ``holder`` (the lease token, see
    worker/lease.py) names the worker of that attempt."""
    run = session.get(Run, run_id)
    if run is None or run.status in events.FINAL_STATUSES or run.source != WORKER:
        return None  # an external run's id in a stray message: its script trains it
    if redis is not None and cancel_requested(redis, run_id):
        finish(session, redis, run_id, "cancelled")
        return None
    # Every SET reads the row as it was: a run that was running or has epochs resumes.
    resumed = or_(Run.status == "running", Run.epochs_done > 0)
    taken = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.not_in(events.FINAL_STATUSES))
        .values(
            attempt=Run.attempt + 1,
            status="running",
            holder=holder,
            started_at=func.coalesce(Run.started_at, utcnow()),
            resumed_at_epoch=case((resumed, Run.epochs_done + 1), else_=None),
        )
        .returning(Run.attempt)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if taken is None:  # it became final meanwhile (cancelled from the API)
        session.rollback()
        return None
    # Read inside the transaction that holds the row: this start's values,
    # not those of one that comes right after.
    session.refresh(run)
    session.commit()
    extra = {"resumed_at_epoch": run.resumed_at_epoch} if run.resumed_at_epoch else {}
    publish_quietly(redis, run_id, events.status_event("running", **extra))
    return run


def is_current(session: Session, run_id: str, attempt: int) -> bool:
    """Whether ``attempt`` is still the run's delivery and the run not final:
    what a trainer checks before each write outside ``record_epoch``."""
    row = session.execute(select(Run.attempt, Run.status).where(Run.id == run_id)).first()
    return row is not None and row.attempt == attempt and row.status not in events.FINAL_STATUSES


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
    do), and the run not final. That is the fence against a stale trainer,
    one frozen past its lease while another worker took the run on
    (worker/lease.py): none of its late epochs is stored, and the recorder,
    which writes files only after SQL took the epoch, stops at the first
    refusal. One conditional UPDATE decides, so two writers of the same
    epoch cannot both pass.
    """
    fence = [Run.id == run_id, Run.epochs_done < epoch]
    if attempt is not None:
        fence += [Run.attempt == attempt, Run.status.not_in(events.FINAL_STATUSES)]
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
    run_summary.refresh(session, run_id)
    session.commit()
    return True


def requeue(
    session: Session,
    redis: Redis | None,
    run_id: str,
    reason: str | None = None,
    deaths: int | None = None,
) -> bool:
    """Put a running run back in the queue's state; it resumes after its last
    recorded epoch when a worker takes it again. False when it was not
    running (finished, or already queued by someone else): one UPDATE decides,
    so two sweepers never both requeue it. ``deaths``: the run's new count of
    deliveries that died (``death_count``), when this requeue follows one."""
    values: dict[str, Any] = {"status": "queued", "queued_at": utcnow()}
    if deaths is not None:
        values["deaths"] = deaths
    changed = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running", Run.source == WORKER)
        .values(**values)
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


def unqueue(session: Session, run_id: str, deaths: int | None = None) -> None:
    """Undo a ``requeue`` whose message could not be sent: running again (and
    its count of deaths as it was), so that the next lease sweep tries once more."""
    values: dict[str, Any] = {"status": "running"}
    if deaths is not None:
        values["deaths"] = deaths
    session.execute(update(Run).where(Run.id == run_id, Run.status == "queued").values(**values))
    session.commit()


def death_count(run: Run) -> int:
    """What ``Run.deaths`` becomes when the delivery training ``run`` died:
    one more, unless that delivery had recorded an epoch since it started
    (``resumed_at_epoch``, see ``mark_running``), which begins a new row: a
    run that makes progress between deaths (a flaky machine) is no poison."""
    progressed = run.epochs_done >= (run.resumed_at_epoch or 1)
    return 1 if progressed else run.deaths + 1


def give_up(
    session: Session, redis: Redis | None, run_id: str, error: str, deaths: int, attempt: int
) -> bool:
    """Fail a run whose deliveries keep dying (a poison run): its queue moves
    on. Only while ``attempt`` is still its delivery (see ``finish``)."""
    session.execute(
        update(Run).where(Run.id == run_id, Run.attempt == attempt).values(deaths=deaths)
    )
    return finish(session, redis, run_id, "failed", error=error, attempt=attempt)


def rewind(
    session: Session, redis: Redis | None, run_id: str, epoch: int, attempt: int | None = None
) -> bool:
    """Forget the run's epochs after ``epoch``: it resumes from the checkpoint
    of that epoch (0: it starts over, its checkpoints lost). With ``attempt``
    (see ``record_epoch``), only while it is the run's and the run not final:
    False, and nothing written, otherwise.

    An epoch is recorded and published before its checkpoint is written (the
    live view does not wait for the file), so a worker that died in between
    leaves SQL one epoch ahead of the newest checkpoint; that epoch is
    trained again. The status event says from which epoch on the curves are
    replaced (``resumed_at_epoch``), for clients that already had them."""
    fence = [Run.id == run_id]
    if attempt is not None:
        fence += [Run.attempt == attempt, Run.status.not_in(events.FINAL_STATUSES)]
    # The fenced UPDATE first: it holds the row while the deletes follow.
    moved = session.execute(
        update(Run)
        .where(*fence)
        .values(
            epochs_done=epoch,
            resumed_at_epoch=epoch + 1 if epoch > 0 else None,
            metrics_version=Run.metrics_version + 1,
        )
    )
    if not getattr(moved, "rowcount", 0):
        session.rollback()
        log.warning("run %s: a later delivery trains it; not rewound to epoch %d", run_id, epoch)
        return False
    session.execute(
        delete(EpochMetrics).where(EpochMetrics.run_id == run_id, EpochMetrics.epoch > epoch)
    )
    # A batch point's epoch is fractional: those of epoch k lie in (k-1, k].
    session.execute(
        delete(BatchMetrics).where(BatchMetrics.run_id == run_id, BatchMetrics.epoch > epoch)
    )
    # The best epoch may be one of those forgotten: the summary goes back with them.
    run_summary.refresh(session, run_id)
    session.commit()
    publish_quietly(redis, run_id, events.status_event("running", resumed_at_epoch=epoch + 1))
    return True


def finish(
    session: Session,
    redis: Redis | None,
    run_id: str,
    status: str,
    error: str | None = None,
    attempt: int | None = None,
    open_only: bool = False,
) -> bool:
    """Mark the run final and say so on its stream. With ``attempt`` (a
    worker's delivery, see ``record_epoch``), only while no later delivery
    started training it and the run is not final yet; with ``open_only``,
    only while it is not final yet: False, and nothing written or published,
    otherwise."""
    if status not in events.FINAL_STATUSES:
        raise ValueError(f"{status!r} is not a final status")
    fence = [Run.id == run_id]
    if attempt is not None:
        fence += [Run.attempt == attempt]
    if attempt is not None or open_only:
        fence += [Run.status.not_in(events.FINAL_STATUSES)]
    changed = session.execute(
        update(Run).where(*fence).values(status=status, error=error, finished_at=utcnow())
    )
    session.commit()
    if not getattr(changed, "rowcount", 0):
        if attempt is not None and session.get(Run, run_id) is not None:
            log.warning(
                "run %s: final already, or a later delivery trains it; not marked %s",
                run_id,
                status,
            )
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


def edit(
    session: Session,
    run: Run,
    *,
    name: str | None = None,
    tags: list[str] | None = None,
    notes: str | None = None,
) -> Run:
    """Rename, tag or annotate a run of any source, in any status (no trainer
    writes these columns); None leaves a field as it is. ``tags`` replace the
    run's, duplicates dropped; ``notes`` "" clears them. ValueError for a
    blank name. Committed; a concurrent change of the same run's tags or its
    deletion raises the database's error (the caller answers it)."""
    if name is not None:
        if not name.strip():
            raise ValueError("name: must not be blank")
        run.name = name.strip()
    if notes is not None:
        run.notes = notes or None
    if tags is not None:
        wanted = list(dict.fromkeys(tags))
        # The rows of tags it keeps stay as they are: no delete and insert of one key.
        kept = [row for row in run.tag_rows if row.tag in wanted]
        have = {row.tag for row in kept}
        run.tag_rows = kept + [RunTag(tag=tag) for tag in wanted if tag not in have]
    session.commit()
    session.refresh(run)
    return run


def cancel_requested(redis: Redis, run_id: str) -> bool:
    try:
        return bool(redis.exists(events.cancel_key(run_id)))
    except RedisError:
        return False


def append_epochs(
    session: Session, run_id: str, rows: list[tuple[int, dict[str, Any]]]
) -> list[int] | None:
    """Store the epochs (number, values) of an external run that SQL lacks;
    one it has already (a re-send) keeps its first values. Returns the
    epochs stored, in order; None, and nothing written, when ``run_id`` is
    not an external run's. ``epochs_done`` becomes the highest epoch stored."""
    by_epoch = [(epoch, {"values": values}) for epoch, values in rows]
    stored = _append(session, run_id, EpochMetrics, EpochMetrics.epoch, by_epoch)
    if stored is None:
        return None
    if stored:
        top = max(stored)
        session.execute(
            update(Run).where(Run.id == run_id, Run.epochs_done < top).values(epochs_done=top)
        )
        run_summary.refresh(session, run_id)
    session.commit()
    return stored


def append_batches(
    session: Session, run_id: str, rows: list[tuple[int, float, dict[str, Any]]]
) -> list[int] | None:
    """Store the batch points (step, fractional epoch, values) of an external
    run that SQL lacks, by step, as ``append_epochs`` does epochs. Returns the
    steps stored; None when ``run_id`` is not an external run's."""
    by_step = [(step, {"epoch": at, "values": values}) for step, at, values in rows]
    stored = _append(session, run_id, BatchMetrics, BatchMetrics.step, by_step)
    if stored is not None:
        session.commit()
    return stored


def _append(
    session: Session,
    run_id: str,
    table: type[EpochMetrics] | type[BatchMetrics],
    key: Any,
    rows: list[tuple[int, dict[str, Any]]],
) -> list[int] | None:
    """Insert the rows (key, other columns) whose key the run lacks, and move ``metrics_version``
    when there is one; the caller commits. The run's row is updated first:
    it holds the row (PostgreSQL) or the database (SQLite) until the commit,
    so two requests re-sending the same rows at once insert them once."""
    held = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.source == EXTERNAL)
        .values(metrics_version=Run.metrics_version + 1)
    )
    if not getattr(held, "rowcount", 0):
        session.rollback()
        return None
    numbers = [number for number, _ in rows]
    have = (
        set(
            session.scalars(
                select(key).where(table.run_id == run_id, key >= min(numbers), key <= max(numbers))
            )
        )
        if numbers
        else set()
    )
    new: dict[int, dict[str, Any]] = {}
    for number, row in rows:
        if number not in have and number not in new:
            new[number] = row
    if not new:
        session.rollback()  # nothing changed: the version stays
        return []
    session.execute(
        insert(table), [{"run_id": run_id, key.key: n, **row} for n, row in new.items()]
    )
    return sorted(new)


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
