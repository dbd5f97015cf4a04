"""Runs: create (queue for a worker), list, read, cancel, metrics, model."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy import select

from backend import artifacts, runs
from backend.api.deps import ResourcesDep, SessionDep
from backend.api.schemas import Metrics, RunCreate, RunPublic
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
    dataset = session.get(Dataset, body.dataset_id)
    if dataset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {body.dataset_id} not found")
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
    session: SessionDep, dataset_id: str | None = None, status: str | None = None
) -> list[Run]:
    """All runs, newest first; filter by dataset or status."""
    query = select(Run).order_by(Run.created_at.desc())
    if dataset_id:
        query = query.where(Run.dataset_id == dataset_id)
    if status:
        query = query.where(Run.status == status)
    return list(session.scalars(query))


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run_id: str, session: SessionDep) -> Run:
    """One run: status, config, progress, error."""
    return get_run(session, run_id)


@router.post("/{run_id}/cancel", response_model=RunPublic)
def cancel_run(run_id: str, session: SessionDep, resources: ResourcesDep) -> Run:
    """Cancel a queued run now, a running one at its next batch."""
    run = get_run(session, run_id)
    try:
        return runs.request_cancel(session, resources.redis, run)
    except RedisError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "Redis is unreachable; cannot signal the worker"
        ) from exc


@router.get("/{run_id}/metrics", response_model=Metrics)
def run_metrics(run_id: str, session: SessionDep) -> Metrics:
    """Every finished epoch (1-based) and the streamed batch points, from SQL."""
    get_run(session, run_id)
    return Metrics(
        epochs=runs.epoch_rows(session, run_id), batches=runs.batch_rows(session, run_id)
    )


@router.get(
    "/{run_id}/model",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_model(run_id: str, session: SessionDep, resources: ResourcesDep) -> FileResponse:
    """The trained model as a .keras file, once the run has one."""
    run = get_run(session, run_id)
    path = artifacts.run_dir(resources.settings.runs_dir, run.id) / artifacts.MODEL_FILE
    if not path.is_file():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"run has no model yet (status: {run.status})"
        )
    return FileResponse(
        path, media_type="application/octet-stream", filename=f"curvelab-{run.id}.keras"
    )
