"""The Celery app's configuration and the one task name: shared by the API
(which only sends) and the worker (which registers and runs the task).

Kept here, not in worker/, so that sending a task never imports TensorFlow.
"""

from __future__ import annotations

from celery import Celery

from backend.settings import Settings

TRAIN_TASK = "curvelab.train"
QUEUE = "training"


def make_celery(settings: Settings) -> Celery:
    app = Celery("curvelab", broker=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in SQL, not in a result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_routes={TRAIN_TASK: {"queue": QUEUE}},
        broker_connection_retry_on_startup=True,
        # A message not acked within this long is delivered again, even if it
        # is still training; it must outlast any queue wait plus run.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        worker_hijack_root_logger=False,
    )
    return app


def enqueue_training(app: Celery, run_id: str) -> None:
    # task id = run id: a duplicate delivery is recognisable as the same run.
    app.send_task(TRAIN_TASK, args=[run_id], task_id=run_id, queue=QUEUE)
