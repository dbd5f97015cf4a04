"""Predict: a finished run's model on one uploaded image, answered by a
predict worker (the API itself never loads TensorFlow)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, UploadFile, status
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from backend import evaluations
from backend.api.deps import ResourcesDep, SessionDep
from backend.api.evaluation_schemas import ClassProbability, PredictionPublic
from backend.api.routes.evaluation import WeightsQuery
from backend.api.routes.runs import get_run
from backend.datasets.errors import IngestError
from backend.datasets.images import UnreadableImage
from backend.predict import ImageTooLarge, PredictTimeout, request_prediction, stored_image

router = APIRouter(prefix="/runs", tags=["predict"])


@router.post(
    "/{run_id}/predict",
    response_model=PredictionPublic,
    responses={
        409: {"description": "The run has not trained to the end, or has no such model."},
        413: {"description": "The image is too large."},
        415: {"description": "The file is not an image."},
        504: {"description": "No predict worker answered in time."},
    },
)
def predict(
    run_id: str,
    session: SessionDep,
    resources: ResourcesDep,
    file: Annotated[
        UploadFile, File(description="One image: PNG, JPEG, BMP, GIF, TIFF, WebP or PPM.")
    ],
    top_k: Annotated[int, Query(ge=1, le=100)] = 5,
    weights: WeightsQuery = None,
) -> PredictionPublic:
    """The run's most probable classes for one image, preprocessed as in training."""
    settings = resources.settings
    run = get_run(session, run_id)
    if run.status != "succeeded":
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"run is {run.status}: predict needs a run that trained to the end",
        )
    chosen = weights or evaluations.default_weights(settings.runs_dir, run.id)
    if chosen is None or not evaluations.model_path(settings.runs_dir, run.id, chosen).is_file():
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"run has no {chosen or 'trained'} model to predict with"
        )
    try:
        image = stored_image(
            file.file, file.filename or "image", settings.tmp_dir, settings.max_image_pixels
        )
    except UnreadableImage as exc:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"not an image: {exc.reason}"
        ) from exc
    except (IngestError, ImageTooLarge) as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from exc
    try:
        reply = request_prediction(
            resources.celery, resources.redis, run.id, chosen, image, settings.predict_timeout_s
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
    names = list(run.class_names)
    ranked = sorted(enumerate(reply["probabilities"]), key=lambda item: -item[1])[:top_k]
    evaluation = evaluations.stored(session, run.id).get(chosen)
    epoch = evaluation.epoch if evaluation else run.epochs_done if chosen == "final" else None
    return PredictionPublic(
        run_id=run.id,
        weights=chosen,
        epoch=epoch,
        top=[
            ClassProbability(
                name=names[index] if index < len(names) else str(index),
                index=index,
                probability=probability,
            )
            for index, probability in ranked
        ],
    )
