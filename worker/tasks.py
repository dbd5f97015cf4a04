"""Celery tasks: thin wrappers that take a run id and call plain functions.

The task re-reads everything from SQL (``run_training`` does), returns
instead of raising, and so is acknowledged once it ends: a run that fails is
recorded as failed, never redelivered in a loop.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from redis import Redis

from backend.db import Database
from backend.queue import TRAIN_TASK
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


@app.task(name=TRAIN_TASK)
def train(run_id: str) -> str:
    """Train one run; returns its final status."""
    try:
        settings, db, redis = _resources()
        return run_training(run_id, settings, db, redis)
    except Exception:
        # run_training records training failures itself; this is for what
        # comes before (a malformed id, SQL unreachable). Acked, not retried.
        log.exception("train(%r) could not run", run_id)
        return "error"
