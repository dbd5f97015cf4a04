"""Predict: the contract between the API, which never imports TensorFlow, and
the predict worker (``worker/predict_tasks.py``), which runs the model.

The API checks and stores the uploaded image exactly as ingest stores a
dataset image (so the worker decodes the bytes a training image would have
been), puts them under a short-lived Redis key, sends a task on the
``predict`` queue and waits on a reply key. The task expires with the wait:
a predict worker that starts later never runs requests nobody waits for.

The API waits with the asyncio Redis client: a request waiting for its reply
holds no thread of the server's pool (40 of them serve every sync route), so
a hundred waiting predictions cannot starve ``/api/health``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import anyio.to_thread
import redis.asyncio as aioredis
from celery import Celery
from PIL import Image
from redis import Redis

from backend.datasets.images import store_image
from backend.uploads import copy_capped

PREDICT_TASK = "curvelab.predict"
PREDICT_QUEUE = "predict"
# The default of CURVELAB_MAX_IMAGE_MB.
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


def stored_image(
    upload: BinaryIO,
    name: str,
    tmp_dir: Path,
    max_pixels: int,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> bytes:
    """The upload as ingest would store it: PNG or JPEG bytes as they came,
    anything else Pillow reads re-encoded to PNG.

    Raises ``backend.datasets.images.UnreadableImage`` for a file that is not
    an image, ``IngestError`` (413) for one of too many pixels, and
    ``ImageTooLarge`` past ``max_bytes`` (CURVELAB_MAX_IMAGE_MB), found while
    copying: nothing past ``max_bytes`` is written.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own guard, as ingest sets it
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="predict-") as folder:
        raw = Path(folder) / "upload"
        copy_capped(upload, raw, max_bytes, _image_too_large)
        image = store_image(raw, "", 0, name, max_pixels)
        return (Path(folder) / image.filename).read_bytes()


def _image_too_large(limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"image is larger than the {limit / 2**20:g} MiB limit (CURVELAB_MAX_IMAGE_MB)"
    )


async def request_prediction(
    celery: Celery,
    redis: aioredis.Redis,
    run_id: str,
    weights: str,
    image: bytes,
    timeout_s: float,
) -> dict[str, Any]:
    """Send one image to a predict worker and wait for its reply (a dict with
    ``status`` and ``probabilities`` or ``detail``). Raises PredictTimeout.

    Awaits Redis, never blocks a thread on it; only Celery's publish, which
    has no asyncio API, runs briefly in a worker thread."""
    request_id = uuid.uuid4().hex
    await redis.set(image_key(request_id), image, ex=math.ceil(timeout_s) + REPLY_TTL_S)
    try:
        await anyio.to_thread.run_sync(
            lambda: celery.send_task(
                PREDICT_TASK,
                args=[request_id, run_id, weights],
                queue=PREDICT_QUEUE,
                expires=timeout_s,
            )
        )
        return await _wait(redis, reply_key(request_id), timeout_s)
    finally:
        await redis.delete(image_key(request_id), reply_key(request_id))


async def _wait(redis: aioredis.Redis, key: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        # Never 0, which would block for ever.
        found = await redis.blpop([key], timeout=max(min(left, _WAIT_SLICE_S), 0.01))
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
