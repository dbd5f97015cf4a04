"""Runs whose worker is gone: found and queued again by every live worker.

A worker SIGKILLed mid-run leaves its run "running" in SQL and its Celery
message unacknowledged until the broker's visibility timeout (days). Its run
lease (``worker/lease.py``) expires within seconds, though; each worker runs
this sweeper in a thread, and a running run whose lease stays missing for
``grace_s`` is put back to "queued" and sent again, so a free worker resumes
it from its last recorded epoch. The dead worker's own message, when the
broker delivers it again much later, finds the run final or leased: a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from celery import Celery
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select

from backend import events, runs
from backend.db import Database, Run
from backend.queue import enqueue_training
from worker.lease import LeaseTiming

log = logging.getLogger(__name__)


class LeaseSweeper:
    def __init__(
        self,
        db: Database,
        redis: Redis,
        celery: Celery,
        timing: LeaseTiming,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.redis = redis
        self.celery = celery
        self.timing = timing
        self._clock = clock
        self._token = uuid.uuid4().hex
        # run id -> when this sweeper first saw it running without a lease
        self._missing: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="curvelab-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timing.sweep_s + 10)

    def sweep(self) -> list[str]:
        """One look; returns the ids of the runs queued again."""
        with self.db.session() as session:
            running = list(session.scalars(select(Run.id).where(Run.status == "running")))
        self._missing = {k: v for k, v in self._missing.items() if k in running}
        if not running:
            return []
        try:
            pipe = self.redis.pipeline(transaction=False)
            for run_id in running:
                pipe.exists(events.lease_key(run_id))
            held = pipe.execute()
        except RedisError as exc:
            # No holder could renew either: start counting again once Redis is back.
            log.warning("lease sweep skipped: %s", exc)
            self._missing.clear()
            return []
        now = self._clock()
        requeued = []
        for run_id, is_held in zip(running, held, strict=True):
            if is_held:
                self._missing.pop(run_id, None)
                continue
            since = self._missing.setdefault(run_id, now)
            if now - since >= self.timing.grace_s and self._requeue(run_id):
                self._missing.pop(run_id, None)
                requeued.append(run_id)
        return requeued

    def _requeue(self, run_id: str) -> bool:
        ttl_ms = int(self.timing.ttl_s * 1000)
        try:
            # One sweeper acts per run, and only while nobody holds its lease.
            if not self.redis.set(events.requeue_key(run_id), self._token, px=ttl_ms, nx=True):
                return False
            if self.redis.exists(events.lease_key(run_id)):
                return False
        except RedisError as exc:
            log.warning("lease sweep of run %s: %s", run_id, exc)
            return False
        with self.db.session() as session:
            if not runs.requeue(session, self.redis, run_id, reason="worker lost"):
                return False  # it finished or moved on meanwhile
            try:
                enqueue_training(self.celery, run_id)
            except Exception as exc:
                # Back to "running" without a lease: the next sweep tries again.
                log.warning("run %s: could not queue it again: %s", run_id, exc)
                runs.unqueue(session, run_id)
                return False
        log.warning("run %s: its worker is gone (lease expired); queued again to resume", run_id)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.timing.sweep_s):
            try:
                self.sweep()
            except Exception as exc:  # the sweeper must outlive any surprise (SQL away, ...)
                log.warning("lease sweep failed: %s", exc)
