"""Deleting runs (and a dataset with its runs): rows, stream and files, and
nothing half-deleted when a step fails.

In this order:

1. A worker's queued or running run is cancelled first (``runs.request_cancel``):
   a queued one at once, a running one's worker sees the flag at its next
   batch. Should it record first, it finds the row gone: its fence
   (worker/training/fence.py) takes that as the run lost, and it writes
   nothing more. The cancel flag is left to expire for it.
2. Each run's folder is moved aside, one rename within the runs dir.
3. The rows go in one transaction (metrics, evaluations and tags by their
   foreign keys' cascades). Should it fail, the folders are renamed back:
   nothing is deleted (a run cancelled in step 1 stays cancelled).
4. The moved folders are removed, then the runs' Redis keys.

A process killed between 2 and 4 leaves only folders named ``.deleting-*``;
the next deletion renames back those of runs that still exist and removes
the others (``recover``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Executable, delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from backend import artifacts, events, runs
from backend.datasets.ingest import delete_dataset_files
from backend.db import Dataset, Run, Sweep, utcnow
from backend.settings import Settings

log = logging.getLogger(__name__)

_TRASH = re.compile(rf"{re.escape(artifacts.TRASH_PREFIX)}([0-9a-f]+)-(\d+)")
# A moved folder older than this belongs to no deletion still under way.
STALE_TRASH_S = 600
LISTED_RUNS = 100  # of a dataset that has runs, in its 409


class DeletionFailed(Exception):
    """The database refused the delete (or a folder could not be moved):
    nothing was deleted; the message says what to do."""


@dataclass
class Deleted:
    deleted: list[str]
    missing: list[str]


def delete_runs(
    session: Session, redis: Redis | None, settings: Settings, run_ids: Sequence[str]
) -> Deleted:
    """Delete the runs of these (server-made) ids, each once; ``missing``: the
    ids no run has."""
    return _delete(session, redis, settings, list(dict.fromkeys(run_ids)), [])


def dataset_runs(session: Session, dataset_id: str) -> tuple[int, list[Run]]:
    """How many runs a dataset has, and the newest ``LISTED_RUNS`` of them."""
    of_it = Run.dataset_id == dataset_id
    count = session.scalar(select(func.count()).select_from(Run).where(of_it))
    newest = session.scalars(
        select(Run).where(of_it).order_by(Run.created_at.desc(), Run.id.desc()).limit(LISTED_RUNS)
    )
    return count or 0, list(newest)


def delete_dataset(
    session: Session, redis: Redis | None, settings: Settings, dataset_id: str
) -> Deleted:
    """Delete a dataset, its runs (as ``delete_runs``) and its files; a
    running sweep of it ends, cancelled, in the same transaction."""
    run_ids = list(session.scalars(select(Run.id).where(Run.dataset_id == dataset_id)))
    also: list[Executable] = [
        update(Sweep)
        .where(Sweep.dataset_id == dataset_id, Sweep.status == "running")
        .values(status="cancelled", finished_at=utcnow(), error="its dataset was deleted"),
        delete(Dataset).where(Dataset.id == dataset_id),
    ]
    deleted = _delete(session, redis, settings, run_ids, also)
    delete_dataset_files(dataset_id, settings)
    return deleted


def _delete(
    session: Session,
    redis: Redis | None,
    settings: Settings,
    run_ids: list[str],
    also: list[Executable],
) -> Deleted:
    recover(session, settings)
    found = list(session.scalars(select(Run).where(Run.id.in_(run_ids)))) if run_ids else []
    active = {run.id for run in found if _active(run)}
    for run in found:
        if run.id in active:
            _cancel(session, redis, run)
    moved = _move_aside(settings.runs_dir, [run.id for run in found])
    try:
        gone = (
            set(session.scalars(delete(Run).where(Run.id.in_(run_ids)).returning(Run.id)))
            if run_ids
            else set()
        )
        for statement in also:
            session.execute(statement)
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        _put_back(moved)
        log.warning("could not delete runs %s: %s", run_ids[:10], exc)
        raise DeletionFailed(
            "the database refused the delete; nothing was deleted, try again"
        ) from exc
    for run in found:
        session.expunge(run)
    for _, trash in moved:
        shutil.rmtree(trash, ignore_errors=True)
    # A trainer that wrote a file between the move and the commit: its folder goes too.
    for _, trash in _move_aside(settings.runs_dir, sorted(gone)):
        shutil.rmtree(trash, ignore_errors=True)
    _forget_keys(redis, sorted(gone), keep_cancel=active)
    return Deleted(
        deleted=[i for i in run_ids if i in gone], missing=[i for i in run_ids if i not in gone]
    )


def _active(run: Run) -> bool:
    # An external run is stopped in its own script; no worker reads its flag.
    return run.source == runs.WORKER and run.status not in events.FINAL_STATUSES


def _cancel(session: Session, redis: Redis | None, run: Run) -> None:
    try:
        runs.request_cancel(session, redis, run)
    except RedisError as exc:
        # Its worker stops anyway, at its next write, when the row is gone.
        log.warning("run %s: could not raise its cancel flag: %s", run.id, exc)


def _move_aside(runs_dir: Path, run_ids: Sequence[str]) -> list[tuple[Path, Path]]:
    """Rename each run's folder to a trash name beside it; (folder, trash)
    of those moved. On a failure, those moved are put back first."""
    moved: list[tuple[Path, Path]] = []
    for run_id in run_ids:
        folder = artifacts.run_dir(runs_dir, run_id)
        trash = artifacts.trash_dir(runs_dir, run_id, time.time_ns())
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            continue  # no files (never trained, or an external run without a model)
        except OSError as exc:
            _put_back(moved)
            raise DeletionFailed(
                f"could not move the files of run {run_id} aside ({exc.strerror}); "
                "nothing was deleted"
            ) from exc
        moved.append((folder, trash))
    return moved


def _put_back(moved: list[tuple[Path, Path]]) -> None:
    for folder, trash in reversed(moved):
        try:
            os.rename(trash, folder)
        except OSError as exc:  # recover() tries again at the next deletion
            log.error("could not put %s back to %s: %s", trash, folder, exc)


def recover(session: Session, settings: Settings) -> None:
    """Settle the moved folders that no deletion under way owns: a run that
    still exists gets its folder back, the others' folders are removed."""
    try:
        entries = list(settings.runs_dir.glob(f"{artifacts.TRASH_PREFIX}*"))
    except OSError:
        return
    stale = time.time_ns() - STALE_TRASH_S * 1_000_000_000
    for trash in entries:
        match = _TRASH.fullmatch(trash.name)
        if match is None or int(match.group(2)) > stale:
            continue
        run_id = match.group(1)
        folder = artifacts.run_dir(settings.runs_dir, run_id)
        if not session.scalar(select(func.count()).select_from(Run).where(Run.id == run_id)):
            shutil.rmtree(trash, ignore_errors=True)
            continue
        try:
            # Renaming onto an existing (non-empty) folder fails: those files
            # are the run's now, and the older ones are left for a person.
            os.rename(trash, folder)
        except OSError as exc:
            log.error("could not put %s back to %s: %s", trash, folder, exc)


def _forget_keys(redis: Redis | None, run_ids: list[str], keep_cancel: set[str]) -> None:
    """The runs' stream and keys; a cancelled run's flag stays (it expires)
    for the worker that may still be training it."""
    if redis is None or not run_ids:
        return
    keys = []
    for run_id in run_ids:
        keys += [
            events.stream_key(run_id),
            events.lease_key(run_id),
            events.requeue_key(run_id),
            events.resend_key(run_id),
            events.run_memory_key(run_id),
        ]
        if run_id not in keep_cancel:
            keys.append(events.cancel_key(run_id))
    try:
        redis.delete(*keys)
    except RedisError as exc:
        log.warning("could not delete the Redis keys of %d deleted run(s): %s", len(run_ids), exc)
