"""What a finished run's model learned: its evaluation, the images of its
most confident mistakes, and its models (the best epoch's and the final)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from backend import evaluations, external_runs, mistakes
from backend.api.deps import ResourcesDep, SessionDep
from backend.api.evaluation_schemas import EvaluationPublic
from backend.api.routes.runs import get_run
from backend.db import Evaluation, Run
from backend.evaluations import Weights
from backend.settings import Settings

router = APIRouter(prefix="/runs", tags=["evaluation"])

WeightsQuery = Annotated[
    Weights | None,
    Query(
        description="best: the epoch of lowest val_loss; final: the last. Default: best "
        "when the run kept it, else final."
    ),
]
PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}}}


def find_evaluation(
    session: Session, settings: Settings, run: Run, weights: Weights | None
) -> Evaluation:
    if external_runs.is_external(run):
        raise HTTPException(status.HTTP_409_CONFLICT, external_runs.no_evaluation(run))
    rows = evaluations.stored(session, run.id)
    if not rows:
        if run.status != "succeeded":
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"run is {run.status}: only a run that trained to the end has an evaluation",
            )
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            "run has no evaluation: it finished before evaluations existed, "
            "or its evaluation failed (see the worker's log)",
        )
    if weights is None:
        preferred = evaluations.default_weights(settings.runs_dir, run.id)
        weights = (
            preferred if preferred in rows else next(w for w in evaluations.WEIGHTS if w in rows)
        )
    if weights not in rows:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"run has no evaluation of its {weights} weights"
        )
    return rows[weights]


@router.get("/{run_id}/evaluation", response_model=EvaluationPublic)
def read_evaluation(
    run_id: str, session: SessionDep, resources: ResourcesDep, weights: WeightsQuery = None
) -> EvaluationPublic:
    """Per-class scores, confusion matrix and most confident mistakes on the validation split."""
    run = get_run(session, run_id)
    found = find_evaluation(session, resources.settings, run, weights)
    available = [w for w in evaluations.WEIGHTS if w in evaluations.stored(session, run.id)]
    return EvaluationPublic.model_validate(
        {
            **found.body,
            "run_id": run.id,
            "weights": found.weights,
            "epoch": found.epoch,
            "available": available,
        }
    )


@router.get("/{run_id}/evaluation/mistakes/{n}/image", response_class=Response, responses=PNG)
def mistake_image(
    run_id: str,
    n: int,
    session: SessionDep,
    resources: ResourcesDep,
    weights: WeightsQuery = None,
    size: Annotated[int, Query(ge=16, le=512)] = 128,
) -> Response:
    """The n-th (0-based) most confident mistake's image, as a PNG thumbnail."""
    run = get_run(session, run_id)
    found = find_evaluation(session, resources.settings, run, weights)
    listed = found.body.get("mistakes") or []
    if not 0 <= n < len(listed):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"the evaluation lists {len(listed)} mistakes; no mistake {n}",
        )
    if run.dataset_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the run's dataset was deleted")
    try:
        path = mistakes.image_file(
            resources.settings.datasets_dir, run.dataset_id, listed[n]["path"]
        )
    except FileNotFoundError as exc:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "the image is missing from the dataset"
        ) from exc
    return Response(
        mistakes.thumbnail_png(path, size),
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.get(
    "/{run_id}/model",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_model(
    run_id: str, session: SessionDep, resources: ResourcesDep, weights: WeightsQuery = None
) -> FileResponse:
    """A trained model as a .keras file: the best epoch's or the final one."""
    run = get_run(session, run_id)
    chosen = weights or evaluations.default_weights(resources.settings.runs_dir, run.id)
    if chosen is None and external_runs.is_external(run):
        raise HTTPException(status.HTTP_409_CONFLICT, external_runs.no_model(run))
    if chosen is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"run has no model yet (status: {run.status})"
        )
    path = evaluations.model_path(resources.settings.runs_dir, run.id, chosen)
    if not path.is_file():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"run has no {chosen} model (status: {run.status})"
        )
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"curvelab-{run.id}-{chosen}.keras",
        headers={"X-Curvelab-Weights": chosen},
    )
