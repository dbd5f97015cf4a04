"""Sweeps: create (runs fan out over the workers), list, read ranked, cancel;
and a run's "Try every suggestion". The logic is backend/sweeps.py's."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from redis.exceptions import RedisError
from sqlalchemy import select

from backend import memory_estimate, sweeps, workers
from backend.api.deps import ResourcesDep, SessionDep, is_server_id
from backend.api.routes.runs import get_run
from backend.api.sweep_schemas import SweepCreate, SweepPublic
from backend.db import Dataset, Sweep
from backend.sweep_suggestions import suggestions_sweep
from backend.sweep_view import sweep_public

router = APIRouter(tags=["sweeps"])

MAX_LISTED = 200


def get_sweep(session: SessionDep, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "sweep not found")
    return sweep


def _refuse_too_big(body: SweepCreate, dataset: Dataset, resources: ResourcesDep) -> None:
    """The base config must fit a worker, as POST /api/runs checks a run's."""
    budget = workers.training_budget_mb(resources.redis, resources.settings.worker_memory_mb)
    if budget is None:
        return
    refusal = memory_estimate.too_big(memory_estimate.for_dataset(body.config, dataset), budget)
    if refusal is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"config: {refusal}")


@router.post("/sweeps", response_model=SweepPublic, status_code=status.HTTP_201_CREATED)
def create_sweep(body: SweepCreate, session: SessionDep, resources: ResourcesDep) -> SweepPublic:
    """Start a sweep: its first runs are queued at once, the rest as slots free up."""
    dataset = session.get(Dataset, body.dataset_id) if is_server_id(body.dataset_id) else None
    if dataset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {body.dataset_id} not found")
    _refuse_too_big(body, dataset, resources)
    try:
        sweep = sweeps.create_sweep(session, resources.settings, resources.celery, dataset, body)
    except sweeps.SweepError as exc:
        raise HTTPException(exc.status_code, exc.detail) from None
    return sweep_public(session, sweep)


@router.get("/sweeps", response_model=list[SweepPublic])
def list_sweeps(session: SessionDep) -> list[SweepPublic]:
    """The newest sweeps first, with their counts and best run (not their runs)."""
    listed = session.scalars(select(Sweep).order_by(Sweep.created_at.desc()).limit(MAX_LISTED))
    return [sweep_public(session, sweep, with_runs=False) for sweep in listed]


@router.get("/sweeps/{sweep_id}", response_model=SweepPublic)
def read_sweep(sweep_id: str, session: SessionDep) -> SweepPublic:
    """The sweep and its runs, best first."""
    return sweep_public(session, get_sweep(session, sweep_id))


@router.post("/sweeps/{sweep_id}/cancel", response_model=SweepPublic)
def cancel_sweep(sweep_id: str, session: SessionDep, resources: ResourcesDep) -> SweepPublic:
    """No new runs; the queued ones are cancelled now, the running ones at their next batch."""
    sweep = get_sweep(session, sweep_id)
    try:
        sweeps.cancel_sweep(session, resources.redis, sweep)
    except RedisError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "Redis is unreachable; cannot signal the workers"
        ) from exc
    sweeps.advance_quietly(session, resources.settings, resources.celery, sweep.id)
    return sweep_public(session, sweep)


@router.post(
    "/runs/{run_id}/try-suggestions",
    response_model=SweepPublic,
    status_code=status.HTTP_201_CREATED,
)
def try_suggestions(run_id: str, session: SessionDep, resources: ResourcesDep) -> SweepPublic:
    """A sweep of the run's config, each patch its diagnosis suggests, and all of them."""
    run = get_run(session, run_id)
    try:
        sweep = suggestions_sweep(session, resources.settings, resources.celery, run)
    except sweeps.SweepError as exc:
        raise HTTPException(exc.status_code, exc.detail) from None
    return sweep_public(session, sweep)
