"""The predict worker's command line, used by ``curvelab up`` (one beside the
training worker) and ``curvelab predict-worker`` (in the foreground)."""

from __future__ import annotations

import sys

from backend.predict import PREDICT_QUEUE


def predict_worker_argv() -> list[str]:
    # Its own Celery app and queue: a training worker is busy for hours, and a
    # prediction must not wait behind a run. Solo: TensorFlow is never forked.
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.predict_tasks:app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={PREDICT_QUEUE}",
        "--hostname=predictor@%h",
        "--loglevel=INFO",
    ]
