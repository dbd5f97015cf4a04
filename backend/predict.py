"""Predict: the contract between the API, which never imports TensorFlow, and
the predict worker (``worker/predict_tasks.py``), which runs the model.

The API checks and stores the uploaded image exactly as ingest stores a
dataset image (so the worker decodes the bytes a training image would have
been), puts them under a short-lived Redis key, sends a task on the
``predict`` queue and waits on a reply key. The task expires with the wait:
a predict worker that starts later never runs requests nobody waits for.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from celery import Celery
from PIL import Image
from redis import Redis

from backend.datasets.images import store_image

PREDICT_TASK = "curvelab.predict"
PREDICT_QUEUE = "predict"
MAX_IMAGE_BYTES = 50 * 1024 * 1024
# How long a reply waits for an API that gave up on it (then it is gone).
REPLY_TTL_S = 60
# BLPOP in slices shorter than the Redis client's socket timeout.
_WAIT_SLICE_S = 2.0


class PredictTimeout(Exception):
    """No predict worker answered in time."""


class ImageTooLarge(Exception):
    pass


def image_key(request_id: str) -> str:
    return f"curvelab:predict:{request_id}:image"


def reply_key(request_id: str) -> str:
    return f"curvelab:predict:{request_id}:reply"


def stored_image(upload: BinaryIO, name: str, tmp_dir: Path, max_pixels: int) -> bytes:
    """The upload as ingest would store it: PNG or JPEG bytes as they came,
    anything else Pillow reads re-encoded to PNG.

    Raises ``backend.datasets.images.UnreadableImage`` for a file that is not
    an image, ``IngestError`` (413) for one of too many pixels, and
    ``ImageTooLarge`` past MAX_IMAGE_BYTES.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own guard, as ingest sets it
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="predict-") as folder:
        raw = Path(folder) / "upload"
        with raw.open("wb") as out:
            shutil.copyfileobj(upload, out, length=1024 * 1024)
        if raw.stat().st_size > MAX_IMAGE_BYTES:
            raise ImageTooLarge(f"the image is over {MAX_IMAGE_BYTES // 2**20} MiB")
        image = store_image(raw, "", 0, name, max_pixels)
        return (Path(folder) / image.filename).read_bytes()


def request_prediction(
    celery: Celery, redis: Redis, run_id: str, weights: str, image: bytes, timeout_s: float
) -> dict[str, Any]:
    """Send one image to a predict worker and wait for its reply (a dict with
    ``status`` and ``probabilities`` or ``detail``). Raises PredictTimeout."""
    request_id = uuid.uuid4().hex
    redis.set(image_key(request_id), image, ex=math.ceil(timeout_s) + REPLY_TTL_S)
    try:
        celery.send_task(
            PREDICT_TASK,
            args=[request_id, run_id, weights],
            queue=PREDICT_QUEUE,
            expires=timeout_s,
        )
        return _wait(redis, reply_key(request_id), timeout_s)
    finally:
        redis.delete(image_key(request_id), reply_key(request_id))


def _wait(redis: Redis, key: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        # Never 0, which would block for ever.
        found = redis.blpop([key], timeout=max(min(left, _WAIT_SLICE_S), 0.01))
        if found is not None:
            reply: dict[str, Any] = json.loads(found[1])
            return reply
    raise PredictTimeout(f"no predict worker answered within {timeout_s:g}s")


def take_image(redis: Redis, request_id: str) -> bytes | None:
    """The worker's side: the request's image, or None once it has expired."""
    image = redis.get(image_key(request_id))
    return image if isinstance(image, bytes) else None


def send_reply(redis: Redis, request_id: str, reply: dict[str, Any]) -> None:
    key = reply_key(request_id)
    with redis.pipeline() as pipe:
        pipe.rpush(key, json.dumps(reply))
        pipe.expire(key, REPLY_TTL_S)
        pipe.execute()
