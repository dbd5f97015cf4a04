"""Queued runs whose message is nowhere: sent again, so every queued run
reaches a worker.

SQL says "queued"; the broker may not have the message: the API died
between its commit and ``send_task``, a worker's shutdown requeue could not
send, Redis was flushed or restarted without its data, or the worker that
took the message died before it leased the run (its unacked message comes
back only after the visibility timeout, days). The lease sweeper
(worker/sweeper.py) sees none of these: it looks at running runs.

Each worker's sweeper thread calls it (``maybe_reconcile``) as it sweeps. A run
queued for longer than ``resend_s`` (``Run.queued_at``) that no worker
leases and whose task id the broker holds neither waiting nor freshly
delivered (``backend.queue.broker_view``) is sent again, by one worker per
period (a SET NX key). A run waiting behind a long training is in the
broker's list, so it is left alone: no pile of duplicates. A duplicate
delivery would be harmless anyway: the lease and SQL decide who trains.
External runs (``Run.source`` "keras") have no message to send: never looked at.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from celery import Celery
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import and_, or_, select

from backend import events, runs
from backend.db import Database, Run, utcnow
from backend.queue import broker_view, enqueue_training

log = logging.getLogger(__name__)


class QueueReconciler:
    def __init__(
        self,
        db: Database,
        redis: Redis,
        celery: Celery,
        resend_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.redis = redis
        self.celery = celery
        self.resend_s = resend_s
        self._clock = clock  # Unix time: kombu stamps deliveries with it
        self._token = uuid.uuid4().hex
        self._next_look = 0.0

    def stranded(self) -> list[str]:
        """Runs queued longer than ``resend_s`` that no lease holds; most are
        simply waiting in the broker's list (``reconcile`` checks that)."""
        cutoff = utcnow() - timedelta(seconds=self.resend_s)
        with self.db.session() as session:
            queued = list(
                session.scalars(
                    select(Run.id).where(
                        Run.status == "queued",
                        Run.source == runs.WORKER,
                        or_(
                            Run.queued_at < cutoff,
                            and_(Run.queued_at.is_(None), Run.created_at < cutoff),
                        ),
                    )
                )
            )
        if not queued:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for run_id in queued:
            pipe.exists(events.lease_key(run_id))
        held = pipe.execute()
        return [run_id for run_id, is_held in zip(queued, held, strict=True) if not is_held]

    def maybe_reconcile(self) -> list[str]:
        """``reconcile``, at most four times a resend period: it may read the
        whole queue, which need not happen at every lease sweep."""
        now = time.monotonic()
        if now < self._next_look:
            return []
        self._next_look = now + self.resend_s / 4
        return self.reconcile()

    def reconcile(self) -> list[str]:
        """One look; returns the ids of the runs whose message was sent again."""
        try:
            candidates = self.stranded()
            if not candidates:
                return []
            view = broker_view(self.redis)
        except RedisError as exc:
            log.warning("queue reconcile skipped: %s", exc)
            return []
        fresh_since = self._clock() - self.resend_s
        lost = [run_id for run_id in candidates if not view.holds(run_id, fresh_since)]
        return [run_id for run_id in lost if self._resend(run_id)]

    def _resend(self, run_id: str) -> bool:
        ttl_ms = max(1, int(self.resend_s * 1000))
        try:
            # One reconciler acts per run and period; the message it sends is
            # in the list by the next period, so the run is not sent twice.
            if not self.redis.set(events.resend_key(run_id), self._token, px=ttl_ms, nx=True):
                return False
            if self.redis.exists(events.lease_key(run_id)):
                return False  # a worker took it meanwhile
        except RedisError as exc:
            log.warning("queue reconcile of run %s: %s", run_id, exc)
            return False
        with self.db.session() as session:
            run = session.get(Run, run_id)
            if run is None or run.status != "queued" or run.source != runs.WORKER:
                return False
        try:
            enqueue_training(self.celery, run_id)
        except Exception as exc:  # broker away: the next period tries again
            log.warning("run %s: could not send its message again: %s", run_id, exc)
            return False
        log.warning(
            "run %s: queued over %.0fs and its message is not in the broker; sent again",
            run_id,
            self.resend_s,
        )
        return True
