"""External runs: a user's own ``model.fit`` with ``curvelab.Callback``,
sent over REST (backend/api/routes/external.py; bodies in backend.fit_summary).

The server stores them in the same tables as a worker's runs, so every page,
the SSE stream, the metrics and the diagnosis read them alike; what differs
is who writes. The client makes the run's id, so every call is idempotent:
creating an id that exists is the same run, a re-sent epoch (by number) or
batch point (by step) is a duplicate and ignored, finishing with the status
the run has is a no-op. A client that lost its answers (a timeout, a server
restart) sends again, and ``curvelab sync`` uploads a spool file whole.

An external run is ``Run.source`` "keras": no lease, no queue message, no
TrainConfig (config ``{}``; the model and fit settings are ``Run.summary``).
The workers' sweeper and reconciler never look at one (worker/sweeper.py,
worker/reconciler.py). Its one file is the model it may upload
(``artifacts.MODEL_FILE``: the "final" weights), staged under the data dir's
tmp and renamed into place, as datasets are; only a predict worker ever
loads it, with ``safe_mode`` (worker/training/inference.py).
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import artifacts, events, runs
from backend.db import Run, utcnow
from backend.fit_summary import (
    AppendResult,
    BatchesAppend,
    EpochsAppend,
    ExternalRunCreate,
    FitSummary,
    RunFinish,
)
from backend.settings import Settings
from backend.uploads import copy_capped

log = logging.getLogger(__name__)

# What every .keras file (a zip) holds: the model's architecture.
KERAS_CONFIG = "config.json"


class ExternalRunError(Exception):
    """A request the run cannot take; the message says why."""


class NotFound(ExternalRunError):
    pass


class Conflict(ExternalRunError):
    """Not an external run, or not in a state that allows it."""


class ModelTooLarge(ExternalRunError):
    pass


class NotAModel(ExternalRunError):
    pass


def is_external(run: Run) -> bool:
    return run.source == runs.EXTERNAL


def no_model(run: Run) -> str:
    """What predict and GET /model answer (409) for an external run that sent no model."""
    return (
        f"run {run.id} is an external run: it uploaded no model "
        "(curvelab.Callback(upload_model=True) sends it at the end of the fit)"
    )


def no_evaluation(run: Run) -> str:
    """What the evaluation routes answer (409) for every external run."""
    return (
        f"run {run.id} is an external run: it has no evaluation, since the server holds "
        "none of its data (its validation curves are in /metrics and the diagnosis)"
    )


def _worker_run(run_id: str) -> Conflict:
    return Conflict(
        f"run {run_id} is trained by a curvelab worker, not an external run: "
        "only its worker records it"
    )


def _external(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound("run not found")
    if not is_external(run):
        raise _worker_run(run_id)
    return run


def default_name(summary: FitSummary) -> str:
    """As a worker's run is named (optimizer, learning rate, batch size), after its model."""
    parts = [summary.model.name]
    optimizer = summary.optimizer
    if optimizer is not None:
        rate = optimizer.learning_rate
        parts.append(optimizer.name if rate is None else f"{optimizer.name} lr={rate:g}")
    if summary.batch_size:
        parts.append(f"bs={summary.batch_size}")
    return " ".join(parts)[:200]


def create(session: Session, redis: Redis | None, body: ExternalRunCreate) -> tuple[Run, bool]:
    """The run of the client's id, running from now; (run, True) when this
    call made it, (the existing run, False) when it exists already (a
    re-sent create: nothing changes). Conflict when the id is a worker's run."""
    found = session.get(Run, body.id)
    if found is not None:
        if not is_external(found):
            raise _worker_run(body.id)
        return found, False
    run = Run(
        id=body.id,
        name=body.name or default_name(body.summary),
        dataset_id=None,
        class_names=list(body.class_names),
        config={},  # the column is not null; RunPublic.config is None for an external run
        status="running",
        source=runs.EXTERNAL,
        host=body.host,
        summary=body.summary.model_dump(mode="json"),
        started_at=utcnow(),
    )
    session.add(run)
    try:
        session.commit()
    except IntegrityError:
        # The same create, sent twice at once: the other one made it.
        session.rollback()
        return _external(session, body.id), False
    runs.publish_quietly(redis, run.id, events.status_event("running"))
    return run, True


def _finite(values: dict[str, Any]) -> dict[str, float | None]:
    # JSON bodies may carry NaN (Python's parser takes it); stored as null, as
    # the worker stores a diverged loss.
    return {k: None if v is None else events.finite_or_none(v) for k, v in values.items()}


def append_epochs(
    session: Session, redis: Redis | None, run_id: str, body: EpochsAppend, maxlen: int
) -> AppendResult:
    """Store the epochs SQL lacks and publish them on the run's stream, in order."""
    rows = [(record.epoch, _finite(record.values)) for record in body.epochs]
    stored = runs.append_epochs(session, run_id, rows)
    if stored is None:
        raise _why_not(session, run_id)
    new = dict(rows[::-1])  # the first of a number sent twice in one body is the one stored
    _publish(redis, run_id, [events.epoch_event(n, new[n]) for n in stored], maxlen)
    return _result(session, run_id, len(stored), len(rows))


def append_batches(
    session: Session, redis: Redis | None, run_id: str, body: BatchesAppend, maxlen: int
) -> AppendResult:
    """Store the batch points SQL lacks (by step) and publish them, in step order."""
    rows = [(record.step, record.epoch, _finite(record.values)) for record in body.batches]
    stored = runs.append_batches(session, run_id, rows)
    if stored is None:
        raise _why_not(session, run_id)
    new = {step: (at, values) for step, at, values in rows[::-1]}
    _publish(redis, run_id, [events.batch_event(s, *new[s]) for s in stored], maxlen)
    return _result(session, run_id, len(stored), len(rows))


def _why_not(session: Session, run_id: str) -> ExternalRunError:
    try:
        _external(session, run_id)
    except ExternalRunError as exc:
        return exc
    return Conflict(f"run {run_id}: not stored")  # not reached: runs.append_* said why


def _result(session: Session, run_id: str, stored: int, sent: int) -> AppendResult:
    done = session.scalar(select(Run.epochs_done).where(Run.id == run_id)) or 0
    return AppendResult(stored=stored, duplicates=sent - stored, epochs_done=done)


def _publish(redis: Redis | None, run_id: str, batch: list[dict[str, Any]], maxlen: int) -> None:
    """The live view: a failing Redis warns (runs.publish_quietly), SQL has the record."""
    if redis is None or not batch:
        return
    try:
        events.publish_many(redis, run_id, batch, maxlen=maxlen)
    except RedisError as exc:
        log.warning("could not publish %d events of run %s: %s", len(batch), run_id, exc)


def finish(session: Session, redis: Redis | None, run_id: str, body: RunFinish) -> Run:
    """Mark the run final (succeeded, failed, interrupted). The status it has
    already is a no-op; another final status is a Conflict."""
    run = _external(session, run_id)
    error = body.error if body.status != "succeeded" else None
    if run.status != body.status and run.status not in events.FINAL_STATUSES:
        runs.finish(session, redis, run_id, body.status, error=error, open_only=True)
    session.refresh(run)
    if run.status != body.status:  # final already (maybe just now, by another request)
        raise Conflict(f"run is {run.status} already; it cannot become {body.status}")
    return run


def store_model(session: Session, settings: Settings, run_id: str, upload: BinaryIO) -> int:
    """Keep an external run's uploaded .keras file as its final model;
    returns its size. Copied under the data dir's tmp with the cap
    (CURVELAB_MAX_MODEL_MB), checked to be a .keras file (a zip holding
    config.json, of bounded uncompressed size), then renamed into place: a
    reader sees the old file or the new one, never half of one."""
    _external(session, run_id)
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.tmp_dir, prefix="model-") as folder:
        staged = Path(folder) / artifacts.MODEL_FILE
        size = _copy_capped(upload, staged, settings.max_model_bytes)
        _check_keras_file(staged, settings.max_uncompressed_mb * 1024 * 1024)
        target = artifacts.run_dir(settings.runs_dir, run_id) / artifacts.MODEL_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    return size


def _copy_capped(upload: BinaryIO, path: Path, limit: int) -> int:
    written = copy_capped(upload, path, limit, _model_too_large)
    if written == 0:
        raise NotAModel("the model file is empty")
    return written


def _model_too_large(limit: int) -> ModelTooLarge:
    return ModelTooLarge(
        f"model is larger than the {limit / 2**20:g} MiB limit (CURVELAB_MAX_MODEL_MB)"
    )


def _check_keras_file(path: Path, max_uncompressed: int) -> None:
    if not zipfile.is_zipfile(path):
        raise NotAModel("not a .keras file (model.save('model.keras') writes one): not a zip")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise NotAModel(f"not a .keras file: {exc}") from exc
    if KERAS_CONFIG not in {entry.filename for entry in entries}:
        raise NotAModel(f"not a .keras file: the zip has no {KERAS_CONFIG}")
    # The predict worker unpacks it: bounded like a dataset's archive.
    if sum(entry.file_size for entry in entries) > max_uncompressed:
        raise ModelTooLarge(
            f"the model unpacks to more than {max_uncompressed / 2**20:g} MiB "
            "(CURVELAB_MAX_UNCOMPRESSED_MB)"
        )
