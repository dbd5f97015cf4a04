"""Runs: create (queue for a worker), list, read, cancel, metrics (JSON and CSV).

External runs (a user's own model.fit) are created and recorded by
routes/external.py; they list, read and give metrics here like any run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy import select

from backend import downsample, memory_estimate, runs, workers
from backend.api import metrics_csv, metrics_reply
from backend.api.deps import ResourcesDep, SessionDep, is_server_id
from backend.api.schemas import Metrics, RunCreate, RunPublic, RunSource, RunStatus
from backend.db import Dataset, Run
from backend.queue import enqueue_training

router = APIRouter(prefix="/runs", tags=["runs"])

NOT_FOUND = "run not found"


def get_run(session: SessionDep, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return run


@router.post("", response_model=RunPublic, status_code=status.HTTP_201_CREATED)
def create_run(body: RunCreate, session: SessionDep, resources: ResourcesDep) -> Run:
    """Queue a training run of a dataset with a TrainConfig."""
    dataset = session.get(Dataset, body.dataset_id) if is_server_id(body.dataset_id) else None
    if dataset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {body.dataset_id} not found")
    # A run that cannot fit would kill every worker that takes it: refused here.
    budget = workers.training_budget_mb(resources.redis, resources.settings.worker_memory_mb)
    if budget is not None:
        needed = memory_estimate.for_dataset(body.config, dataset)
        refusal = memory_estimate.too_big(needed, budget)
        if refusal is not None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, refusal)
    run = runs.create_run(session, dataset, body.config, body.name)
    try:
        enqueue_training(resources.celery, run.id)
    except (OperationalError, RedisError, OSError) as exc:
        runs.finish(session, None, run.id, "failed", error=f"could not queue the run: {exc}")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the task queue (Redis) is unreachable; try again"
        ) from exc
    return run


@router.get("", response_model=list[RunPublic])
def list_runs(
    session: SessionDep,
    dataset_id: str | None = None,
    status: RunStatus | None = None,
    source: RunSource | None = None,
) -> list[Run]:
    """All runs, newest first; filter by dataset, status or source (keras: external runs)."""
    if dataset_id and not is_server_id(dataset_id):
        return []  # no dataset has such an id; never sent to SQL
    query = select(Run).order_by(Run.created_at.desc())
    if dataset_id:
        query = query.where(Run.dataset_id == dataset_id)
    if status:
        query = query.where(Run.status == status)
    if source:
        query = query.where(Run.source == source)
    return list(session.scalars(query))


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run_id: str, session: SessionDep) -> Run:
    """One run: status, config, progress, error."""
    return get_run(session, run_id)


@router.post("/{run_id}/cancel", response_model=RunPublic)
def cancel_run(run_id: str, session: SessionDep, resources: ResourcesDep) -> Run:
    """Cancel a queued run now, a running one at its next batch."""
    run = get_run(session, run_id)
    if run.source == runs.EXTERNAL:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "an external run is stopped in its own script (Ctrl-C: it ends interrupted)",
        )
    try:
        return runs.request_cancel(session, resources.redis, run)
    except RedisError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "Redis is unreachable; cannot signal the worker"
        ) from exc


def metrics_bodies(request: Request) -> metrics_reply.BodyCache:
    """The app's cache of metrics bodies, made in its lifespan (bounded in bytes)."""
    cache: metrics_reply.BodyCache = request.state.metrics_bodies
    return cache


MaxPoints = Annotated[
    int,
    Query(
        ge=downsample.MIN_POINTS,
        le=downsample.MAX_POINTS_LIMIT,
        description="At most this many batch points; a longer series is downsampled "
        "(min/max per bucket, see `downsampled`).",
    ),
]


@router.get(
    "/{run_id}/metrics",
    response_model=Metrics,
    responses={304: {"description": "Not modified: the If-None-Match ETag is current."}},
)
def run_metrics(
    run_id: str,
    session: SessionDep,
    bodies: Annotated[metrics_reply.BodyCache, Depends(metrics_bodies)],
    if_none_match: Annotated[str | None, Header()] = None,
    max_points: MaxPoints = downsample.DEFAULT_MAX_POINTS,
) -> Response:
    """Every finished epoch (1-based) and the batch points, downsampled past ``max_points``."""
    run = get_run(session, run_id)
    tag = metrics_reply.etag(run, max_points)
    # Viewers poll: they must ask again each time, and usually hear "unchanged".
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if metrics_reply.etag_matches(if_none_match, tag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    # Already the Metrics JSON: returned as bytes, it skips a validation that
    # would only copy the rows' dicts.
    body = bodies.body(session, run, max_points)
    return Response(body, media_type="application/json", headers=headers)


class CSVResponse(StreamingResponse):
    media_type = "text/csv"  # Starlette adds "; charset=utf-8"


def _csv(run: Run, rows: Iterator[str], kind: str) -> CSVResponse:
    disposition = f'attachment; filename="run-{run.id}-{kind}.csv"'
    return CSVResponse(rows, headers={"Content-Disposition": disposition})


@router.get("/{run_id}/metrics/batches.csv", response_class=CSVResponse)
def run_batches_csv(run_id: str, session: SessionDep, resources: ResourcesDep) -> CSVResponse:
    """Every batch point, in step order, as CSV (streamed: any length of run)."""
    run = get_run(session, run_id)
    return _csv(run, metrics_csv.batch_csv(resources.db, run.id), "batches")


@router.get("/{run_id}/metrics/epochs.csv", response_class=CSVResponse)
def run_epochs_csv(run_id: str, session: SessionDep, resources: ResourcesDep) -> CSVResponse:
    """Every finished epoch's values, as CSV."""
    run = get_run(session, run_id)
    return _csv(run, metrics_csv.epoch_csv(resources.db, run.id), "epochs")
