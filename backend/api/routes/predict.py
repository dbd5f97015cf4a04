"""Predict: a finished run's model on one uploaded image, answered by a
predict worker (the API itself never loads TensorFlow).

An async route: the wait for the worker's reply awaits Redis and holds no
thread. The SQL reads and the image check (Pillow) are short and blocking, so
they run in the thread pool, each in a session of its own: a waiting request
holds no SQL connection either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, UploadFile, status
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from backend import evaluations, external_runs
from backend.api.deps import Resources, ResourcesDep
from backend.api.evaluation_schemas import ClassProbability, PredictionPublic
from backend.api.routes.evaluation import WeightsQuery
from backend.api.routes.runs import get_run
from backend.datasets.errors import IngestError
from backend.datasets.images import UnreadableImage
from backend.evaluations import Weights
from backend.predict import ImageTooLarge, PredictTimeout, request_prediction, stored_image

router = APIRouter(prefix="/runs", tags=["predict"])


@dataclass(frozen=True)
class _Request:
    """What the answer needs, read before the wait."""

    run_id: str
    class_names: list[str]
    weights: Weights
    epoch: int | None
    image: bytes


@router.post(
    "/{run_id}/predict",
    response_model=PredictionPublic,
    responses={
        409: {
            "description": "The run has not trained to the end, or has no such model (an "
            "external run that uploaded none)."
        },
        413: {"description": "The image is too large."},
        415: {"description": "The file is not an image."},
        504: {"description": "No predict worker answered in time."},
    },
)
async def predict(
    run_id: str,
    resources: ResourcesDep,
    file: Annotated[
        UploadFile, File(description="One image: PNG, JPEG, BMP, GIF, TIFF, WebP or PPM.")
    ],
    top_k: Annotated[int, Query(ge=1, le=100)] = 5,
    weights: WeightsQuery = None,
) -> PredictionPublic:
    """The run's most probable classes for one image, preprocessed as in training (an
    external run's: resized to its model's input, RGB or grayscale by its channels,
    scaled to 0–1, as a worker's run is fed)."""
    request = await run_in_threadpool(_checked_request, resources, run_id, weights, file)
    try:
        reply = await request_prediction(
            resources.celery,
            resources.aredis,
            request.run_id,
            request.weights,
            request.image,
            resources.settings.predict_timeout_s,
        )
    except PredictTimeout as exc:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT,
            f"{exc}; is one running? `curvelab up` starts one, "
            "`curvelab predict-worker` runs one alone",
        ) from exc
    except (OperationalError, RedisError, OSError) as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the task queue (Redis) is unreachable; try again"
        ) from exc
    if reply.get("status") != 200:
        raise HTTPException(int(reply.get("status") or 500), str(reply.get("detail")))
    names = request.class_names
    ranked = sorted(enumerate(reply["probabilities"]), key=lambda item: -item[1])[:top_k]
    return PredictionPublic(
        run_id=request.run_id,
        weights=request.weights,
        epoch=request.epoch,
        top=[
            ClassProbability(
                name=names[index] if index < len(names) else str(index),
                index=index,
                probability=probability,
            )
            for index, probability in ranked
        ],
    )


def _checked_request(
    resources: Resources, run_id: str, weights: Weights | None, file: UploadFile
) -> _Request:
    """The run can predict with ``weights`` and the file is an image (else
    the HTTPException that says what is wrong); in the thread pool."""
    settings = resources.settings
    with resources.db.session() as session:
        run = get_run(session, run_id)
        external = external_runs.is_external(run)
        if external and evaluations.default_weights(settings.runs_dir, run.id) is None:
            raise HTTPException(status.HTTP_409_CONFLICT, external_runs.no_model(run))
        # An external run's model is what its script sent, whenever it sent it.
        if run.status != "succeeded" and not external:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"run is {run.status}: predict needs a run that trained to the end",
            )
        chosen = weights or evaluations.default_weights(settings.runs_dir, run.id)
        path = evaluations.model_path(settings.runs_dir, run.id, chosen) if chosen else None
        if chosen is None or path is None or not path.is_file():
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"run has no {chosen or 'trained'} model to predict with"
            )
        evaluation = evaluations.stored(session, run.id).get(chosen)
        epoch = evaluation.epoch if evaluation else run.epochs_done if chosen == "final" else None
        names = list(run.class_names)
    try:
        image = stored_image(
            file.file,
            file.filename or "image",
            settings.tmp_dir,
            settings.max_image_pixels,
            settings.max_image_bytes,
        )
    except UnreadableImage as exc:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"not an image: {exc.reason}"
        ) from exc
    except (IngestError, ImageTooLarge) as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from exc
    return _Request(run_id, names, chosen, epoch, image)
