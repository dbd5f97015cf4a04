"""External runs: a user's own ``model.fit`` (``curvelab.Callback``) creates
a run, appends its epochs and batch points, finishes it and may upload its
model. Idempotent throughout (backend.external_runs); bodies in
backend.fit_summary."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Response, UploadFile, status

from backend import external_runs
from backend.api.deps import ResourcesDep, SessionDep
from backend.api.schemas import RunPublic
from backend.db import Run
from backend.external_runs import Conflict, ExternalRunError, ModelTooLarge, NotAModel, NotFound
from backend.fit_summary import (
    AppendResult,
    BatchesAppend,
    EpochsAppend,
    ExternalRunCreate,
    ModelStored,
    RunFinish,
)

router = APIRouter(prefix="/runs", tags=["external runs"])

_STATUS = {
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    ModelTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
    NotAModel: status.HTTP_422_UNPROCESSABLE_CONTENT,
}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No run has this id."},
    409: {
        "description": "The run is a worker's, not an external run (or, to finish: it "
        "ended with another status)."
    },
}


def _http(exc: ExternalRunError) -> HTTPException:
    return HTTPException(_STATUS.get(type(exc), status.HTTP_409_CONFLICT), str(exc))


@router.post(
    "/external",
    response_model=RunPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": RunPublic, "description": "The run of this id exists already: it."},
        409: {"description": "The id is a worker's run."},
    },
)
def create_external_run(
    body: ExternalRunCreate, response: Response, session: SessionDep, resources: ResourcesDep
) -> Run:
    """Start an external run (status running) under the client's own id; sent
    again, the same run (200)."""
    try:
        run, made = external_runs.create(session, resources.redis, body)
    except ExternalRunError as exc:
        raise _http(exc) from exc
    if not made:
        response.status_code = status.HTTP_200_OK
    return run


@router.post("/{run_id}/epochs", response_model=AppendResult, responses=_REFUSALS)
def append_epochs(
    run_id: str, body: EpochsAppend, session: SessionDep, resources: ResourcesDep
) -> AppendResult:
    """Finished epochs (1-based) of an external run; one it has already is ignored."""
    try:
        return external_runs.append_epochs(
            session, resources.redis, run_id, body, resources.settings.stream_maxlen
        )
    except ExternalRunError as exc:
        raise _http(exc) from exc


@router.post("/{run_id}/batches", response_model=AppendResult, responses=_REFUSALS)
def append_batches(
    run_id: str, body: BatchesAppend, session: SessionDep, resources: ResourcesDep
) -> AppendResult:
    """Batch points (by global step) of an external run; one it has already is ignored."""
    try:
        return external_runs.append_batches(
            session, resources.redis, run_id, body, resources.settings.stream_maxlen
        )
    except ExternalRunError as exc:
        raise _http(exc) from exc


@router.post("/{run_id}/finish", response_model=RunPublic, responses=_REFUSALS)
def finish_external_run(
    run_id: str, body: RunFinish, session: SessionDep, resources: ResourcesDep
) -> Run:
    """End an external run: succeeded, failed (with the error) or interrupted.
    The status it has already: a no-op."""
    try:
        return external_runs.finish(session, resources.redis, run_id, body)
    except ExternalRunError as exc:
        raise _http(exc) from exc


@router.put(
    "/{run_id}/model",
    response_model=ModelStored,
    status_code=status.HTTP_201_CREATED,
    responses={
        **_REFUSALS,
        413: {"description": "The model is larger than CURVELAB_MAX_MODEL_MB."},
        422: {"description": "The file is not a .keras model."},
    },
)
def upload_model(
    run_id: str,
    session: SessionDep,
    resources: ResourcesDep,
    file: Annotated[
        UploadFile, File(description="The model, as model.save('model.keras') wrote it.")
    ],
) -> ModelStored:
    """An external run's final model (.keras): then GET /model and predict work for it."""
    try:
        size = external_runs.store_model(session, resources.settings, run_id, file.file)
    except ExternalRunError as exc:
        raise _http(exc) from exc
    return ModelStored(bytes=size)
