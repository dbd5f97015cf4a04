"""Runs: create (queue for a worker), list (a page: backend.run_list), read,
rename/tag/annotate, cancel, delete (backend.run_deletion), metrics (JSON and CSV).

External runs (a user's own model.fit) are created and recorded by
routes/external.py; they list, read, change, delete and give metrics here
like any run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from backend import downsample, memory_estimate, run_deletion, run_list, runs, sweeps, workers
from backend.api import metrics_csv, metrics_reply
from backend.api.deps import ResourcesDep, SessionDep, is_server_id
from backend.api.schemas import (
    Metrics,
    RunCreate,
    RunPage,
    RunPatch,
    RunPublic,
    RunsDelete,
    RunsDeleted,
    RunSort,
    RunSource,
    RunStatus,
)
from backend.db import Dataset, Run
from backend.events import FINAL_STATUSES
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


MAX_TAG_FILTERS = 20


@router.get("", response_model=RunPage)
def list_runs(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200, description="Runs a page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=1000, description="The `next` of the previous page (same sort)."),
    ] = None,
    offset: Annotated[
        int | None,
        Query(ge=0, le=10_000_000, description="Runs to skip: a jump to a page (not with cursor)."),
    ] = None,
    sort: Annotated[
        RunSort,
        Query(description='A leading "-": descending. Runs without the value come last.'),
    ] = "-created",
    statuses: Annotated[
        list[RunStatus] | None, Query(alias="status", description="Any of these (repeat it).")
    ] = None,
    dataset_id: str | None = None,
    tags: Annotated[
        list[str] | None, Query(alias="tag", description="All of these tags (repeat it).")
    ] = None,
    source: Annotated[RunSource | None, Query(description="keras: external runs.")] = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="In the name, notes or a tag (any case)."),
    ] = None,
    created_after: Annotated[datetime | None, Query(description="Inclusive.")] = None,
    created_before: Annotated[datetime | None, Query(description="Exclusive.")] = None,
    sweep_id: str | None = None,
) -> dict[str, Any]:
    """A page of runs (newest first unless sorted), filtered, with the total that match."""
    if cursor is not None and offset is not None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "send cursor or offset, not both (a cursor already says where the page starts)",
        )
    if tags is not None and len(tags) > MAX_TAG_FILTERS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"tag: at most {MAX_TAG_FILTERS} tags"
        )
    filters = run_list.RunFilters(
        statuses=tuple(statuses or ()),
        dataset_id=dataset_id,
        tags=tuple(tags or ()),
        source=source,
        q=q or None,
        created_after=created_after,
        created_before=created_before,
        sweep_id=sweep_id,
    )
    if any(value is not None and not is_server_id(value) for value in (dataset_id, sweep_id)):
        return {"items": [], "total": 0, "next": None}  # no such id exists; never sent to SQL
    try:
        found = run_list.page(session, filters, sort, limit, cursor, offset or 0)
    except run_list.BadCursor as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return {"items": found.items, "total": found.total, "next": found.next}


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run_id: str, session: SessionDep) -> Run:
    """One run: status, config, progress, error."""
    return get_run(session, run_id)


@router.patch(
    "/{run_id}",
    response_model=RunPublic,
    responses={409: {"description": "Another request changed the run at the same time."}},
)
def edit_run(run_id: str, body: RunPatch, session: SessionDep) -> Run:
    """Rename a run, replace its tags or its notes (any run, external ones too)."""
    run = get_run(session, run_id)
    try:
        return runs.edit(session, run, name=body.name, tags=body.tags, notes=body.notes)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except (IntegrityError, StaleDataError) as exc:
        session.rollback()
        get_run(session, run_id)  # deleted meanwhile: 404
        raise HTTPException(
            status.HTTP_409_CONFLICT, "the run was changed by another request meanwhile; send again"
        ) from exc


REFUSED: dict[int | str, dict[str, Any]] = {
    503: {"description": "The database refused the delete: nothing was deleted."}
}


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT, responses=REFUSED)
def delete_run(run_id: str, session: SessionDep, resources: ResourcesDep) -> Response:
    """Delete a run: its rows, event stream and files (a queued or running one cancelled first)."""
    if _delete(session, resources, [run_id]).missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/delete", response_model=RunsDeleted, responses=REFUSED)
def delete_runs(body: RunsDelete, session: SessionDep, resources: ResourcesDep) -> RunsDeleted:
    """Delete many runs at once, as DELETE /api/runs/{id} does each."""
    ids = list(dict.fromkeys(body.ids))
    # An id the server could not have made names no run; never sent to SQL.
    known = [run_id for run_id in ids if is_server_id(run_id)]
    done = _delete(session, resources, known)
    gone = set(done.deleted)
    return RunsDeleted(deleted=done.deleted, missing=[i for i in ids if i not in gone])


def _delete(session: SessionDep, resources: ResourcesDep, ids: list[str]) -> run_deletion.Deleted:
    try:
        return run_deletion.delete_runs(session, resources.redis, resources.settings, ids)
    except run_deletion.DeletionFailed as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


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
        cancelled = runs.request_cancel(session, resources.redis, run)
    except RedisError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "Redis is unreachable; cannot signal the worker"
        ) from exc
    if cancelled.sweep_id and cancelled.status in FINAL_STATUSES:
        # A queued run of a sweep, cancelled now: its slot goes to the next trial.
        sweeps.advance_quietly(session, resources.settings, resources.celery, cancelled.sweep_id)
    return cancelled


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
