"""Celery tasks: thin wrappers that take a run id and call plain functions.

The task re-reads everything from SQL (``run_training`` does), returns
instead of raising, and so is acknowledged once it ends: a run that fails is
recorded as failed, never redelivered in a loop. It trains only while it
holds the run's lease (``worker/lease.py``): a second delivery of a run that
another live worker trains returns at once, touching nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from typing import Any

from celery.signals import worker_shutting_down
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select

from backend import events, runs, sweeps
from backend.db import Database, Run
from backend.queue import TRAIN_TASK, enqueue_training
from backend.settings import Settings, get_settings
from worker.celery_app import app, training
from worker.lease import LeaseTiming, RunLease
from worker.training.runner import run_training

log = logging.getLogger(__name__)

# How long a task waits for an unreachable Redis (restarting?) to take a lease.
LEASE_WAIT_S = 30.0


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
    """Train one run; returns its final status ("leased": another worker has it)."""
    try:
        settings, db, redis = _resources()
        lease = RunLease(redis, run_id, LeaseTiming.from_settings(settings))
        if not _acquire(lease, db):
            return "leased"
        with lease.kept(), training(run_id):
            status = run_training(run_id, settings, db, redis, pause=shutting_down, lease=lease)
        # Released first: the worker that takes the new message must find it free.
        if status == "interrupted":
            with db.session() as session:
                runs.requeue(session, redis, run_id)
            try:
                enqueue_training(app, run_id)
            except Exception as exc:  # the broker is away as the worker stops
                # Queued in SQL, its message nowhere: the queue reconciler of
                # any worker sends it again (worker/reconciler.py).
                log.warning(
                    "run %s: could not queue it again (%s); left to the reconciler", run_id, exc
                )
            else:
                log.info("run %s: worker shutting down; queued again to resume", run_id)
        elif status in events.FINAL_STATUSES:
            _advance_sweep(settings, db, run_id)
        return status
    except Exception:
        # run_training records training failures itself; this is for what
        # comes before (a malformed id, SQL unreachable). Acked, not retried.
        log.exception("train(%r) could not run", run_id)
        return "error"


def _advance_sweep(settings: Settings, db: Database, run_id: str) -> None:
    """A sweep's run ended: its slot goes to the sweep's next trial now, not
    at the next sweeper pass. Failures are logged (backend.sweeps)."""
    with db.session() as session:
        sweep_id = session.scalar(select(Run.sweep_id).where(Run.id == run_id))
        if sweep_id is not None:
            sweeps.advance_quietly(session, settings, app, sweep_id)


def _acquire(lease: RunLease, db: Database) -> bool:
    """Take the run's lease; False when a live worker holds it. A Redis that
    does not answer for LEASE_WAIT_S fails a queued run with a message (a
    running one is left to the lease sweep once Redis is back)."""
    deadline = time.monotonic() + LEASE_WAIT_S
    while True:
        try:
            if lease.acquire():
                return True
            log.info(
                "run %s: leased by %s; this delivery leaves it alone",
                lease.run_id,
                lease.holder(),
            )
            return False
        except RedisError as exc:
            if time.monotonic() >= deadline:
                message = f"Redis did not answer for {LEASE_WAIT_S:g}s: {exc}"
                log.error("run %s: %s", lease.run_id, message)
                with db.session() as session:
                    run = session.get(Run, lease.run_id)
                    if run is not None and run.status == "queued":
                        runs.finish(session, None, lease.run_id, "failed", error=message)
                return False
            time.sleep(1.0)
