"""Celery tasks: thin wrappers that take a run id and call plain functions.

The task re-reads everything from SQL (``run_training`` does), returns
instead of raising, and so is acknowledged once it ends: a run that fails is
recorded as failed, never redelivered in a loop.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import Any

from celery.signals import worker_shutting_down
from redis import Redis

from backend import runs
from backend.db import Database
from backend.queue import TRAIN_TASK, enqueue_training
from backend.settings import Settings, get_settings
from worker.celery_app import app
from worker.training.runner import run_training

log = logging.getLogger(__name__)


@lru_cache
def _resources() -> tuple[Settings, Database, Redis]:
    """Made on the first task, then shared by every task of this process."""
    settings = get_settings()
    settings.ensure_dirs()
    # Timeouts, so a Redis that stops answering cannot hang the run's
    # status updates (the live side channel already runs off-thread).
    redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    return settings, Database(settings.sqlalchemy_url), redis


# Set when this worker is asked to stop (Ctrl-C, SIGTERM): the running
# training stops at its next batch and its run goes back in the queue,
# instead of the worker waiting hours for it or being killed mid-epoch.
shutting_down = threading.Event()


@worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    shutting_down.set()


@app.task(name=TRAIN_TASK)
def train(run_id: str) -> str:
    """Train one run; returns its final status."""
    try:
        settings, db, redis = _resources()
        status = run_training(run_id, settings, db, redis, pause=shutting_down)
        if status == "interrupted":
            with db.session() as session:
                runs.requeue(session, redis, run_id)
            enqueue_training(app, run_id)
            log.info("run %s: worker shutting down; queued again to resume", run_id)
        return status
    except Exception:
        # run_training records training failures itself; this is for what
        # comes before (a malformed id, SQL unreachable). Acked, not retried.
        log.exception("train(%r) could not run", run_id)
        return "error"
