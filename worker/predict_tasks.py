"""The predict worker: a Celery app of its own, on the ``predict`` queue, whose
one task runs a finished run's model on one image.

A process apart from the training workers, whose solo pool is busy for hours
at a time; and an app apart from ``worker/celery_app.py``, so that it neither
beats the training heartbeat (the API's health counts training workers) nor
sweeps training leases. Solo pool: TensorFlow is never forked, and one
prediction takes milliseconds once its model is cached::

    python -m celery -A worker.predict_tasks:app worker --pool=solo \
        --concurrency=1 --queues=predict --loglevel=INFO
"""

from __future__ import annotations

import logging
from functools import lru_cache

from redis import Redis

from backend import evaluations
from backend.db import Database
from backend.predict import PREDICT_QUEUE, PREDICT_TASK, send_reply, take_image
from backend.queue import make_celery
from backend.settings import Settings, get_settings
from worker.training.inference import ModelCache, predict_reply
from worker.training.runner import describe_error

log = logging.getLogger(__name__)

app = make_celery(get_settings())
app.conf.update(
    task_default_queue=PREDICT_QUEUE,
    task_routes={PREDICT_TASK: {"queue": PREDICT_QUEUE}},
    # Wait for a restarted Redis however long it takes, as the training worker does.
    broker_connection_retry=True,
    broker_connection_max_retries=None,
)

_models = ModelCache()


@lru_cache
def _resources() -> tuple[Settings, Database, Redis]:
    settings = get_settings()
    redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    return settings, Database(settings.sqlalchemy_url), redis


# Acknowledged on receipt: a request is worth answering once, now; a redelivery
# would answer nobody.
@app.task(name=PREDICT_TASK, acks_late=False)
def predict(request_id: str, run_id: str, weights: evaluations.Weights) -> int:
    """Answer one request on its reply key; returns the reply's status."""
    settings, db, redis = _resources()
    image = take_image(redis, request_id)
    if image is None:
        return 410  # its API gave up waiting long ago
    try:
        reply = predict_reply(run_id, weights, image, settings, db, _models)
    except Exception as exc:
        log.exception("predict for run %s failed", run_id)
        reply = {"status": 500, "detail": f"the prediction failed: {describe_error(exc)}"}
    send_reply(redis, request_id, reply)
    return int(reply["status"])
