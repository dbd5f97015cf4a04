"""Runs whose worker is gone: found and queued again by every live worker.

A worker SIGKILLed mid-run leaves its run "running" in SQL and its Celery
message unacknowledged until the broker's visibility timeout (days). Its run
lease (``worker/lease.py``) expires within seconds, though; each worker runs
this sweeper in a thread, and a running run whose lease stays missing for
``grace_s`` is put back to "queued" and sent again, so a free worker resumes
it from its last recorded epoch. The dead worker's own message, when the
broker delivers it again much later, finds the run final or leased: a no-op.

Each such requeue is a delivery that died (unless its worker still beats:
then only its lease was lost, to a Redis flush) and counts in ``Run.deaths``
(``runs.death_count``: in a row, without an epoch recorded between). At
``max_deaths`` the run is failed instead, with what was seen
(worker/deaths.py): a run that kills every worker that takes it (out of
memory) ends, and the queue behind it moves on. The same thread drives the
queue reconciler (worker/reconciler.py), which sends again the queued runs
whose message is lost, and the sweeps' safety net (``SweepAdvancer``): every
running sweep advanced now and then, for the runs that ended where no
worker's task did it (cancelled while queued, failed by this sweeper).

An external run (``Run.source`` "keras": a user's own model.fit, recorded over
REST) is running without a lease, always: the sweeper never looks at one.
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
from sqlalchemy.orm import Session

from backend import events, runs, sweeps
from backend.db import Database, Run
from backend.queue import enqueue_training
from backend.settings import Settings
from worker import deaths
from worker.lease import LeaseTiming
from worker.reconciler import QueueReconciler

log = logging.getLogger(__name__)


class LeaseSweeper:
    def __init__(
        self,
        db: Database,
        redis: Redis,
        celery: Celery,
        timing: LeaseTiming,
        clock: Callable[[], float] = time.monotonic,
        max_deaths: int = 3,
        reconciler: QueueReconciler | None = None,
        advancer: SweepAdvancer | None = None,
        statistics_every_s: float = 600.0,
    ) -> None:
        self.db = db
        self.redis = redis
        self.celery = celery
        self.timing = timing
        self.max_deaths = max_deaths
        self.reconciler = reconciler
        self.advancer = advancer
        # The database's planner statistics go stale as runs pile up.
        self._statistics = Periodic(statistics_every_s, db.refresh_statistics, clock)
        # Runs failed by this sweeper as poison (their deliveries kept dying).
        self.given_up: list[str] = []
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
            running = list(
                session.scalars(
                    select(Run.id).where(Run.status == "running", Run.source == runs.WORKER)
                )
            )
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
            owner = self._holder(run_id)
            still_beats = deaths.alive(self.redis, owner, run_id)
        except RedisError as exc:
            log.warning("lease sweep of run %s: %s", run_id, exc)
            return False
        seen_exit = None if still_beats or owner is None else deaths.read_exit(self.redis, owner)
        died = not still_beats and deaths.is_death(seen_exit)
        with self.db.session() as session:
            run = session.get(Run, run_id)
            if run is None or run.status != "running" or run.source != runs.WORKER:
                return False
            before = run.deaths
            count = runs.death_count(run) if died else None
            if count is not None and count >= self.max_deaths:
                return self._give_up(session, run, count, seen_exit)
            reason = "worker lost" if died else "lease lost"
            if not runs.requeue(session, self.redis, run_id, reason=reason, deaths=count):
                return False  # it finished or moved on meanwhile
            try:
                enqueue_training(self.celery, run_id)
            except Exception as exc:
                # Back to "running" without a lease: the next sweep tries again.
                log.warning("run %s: could not queue it again: %s", run_id, exc)
                runs.unqueue(session, run_id, deaths=before)
                return False
        if died:
            log.warning(
                "run %s: its worker %s is gone (lease expired%s); queued again to resume "
                "(death %d of %d in a row)",
                run_id,
                owner or "?",
                f", {seen_exit.describe()}" if seen_exit else "",
                count,
                self.max_deaths,
            )
        else:
            log.warning("run %s: its lease vanished while %s lives; queued again", run_id, owner)
        return True

    def _holder(self, run_id: str) -> str | None:
        with self.db.session() as session:
            run = session.get(Run, run_id)
            return deaths.owner_of(run.holder) if run is not None else None

    def _give_up(
        self, session: Session, run: Run, count: int, seen_exit: deaths.Exit | None
    ) -> bool:
        message = deaths.describe(self.redis, run, count, seen_exit)
        if not runs.give_up(session, self.redis, run.id, message, count, run.attempt):
            return False
        self.given_up.append(run.id)
        log.error("run %s failed: %s", run.id, message)
        return False  # not queued again

    def _loop(self) -> None:
        while not self._stop.wait(self.timing.sweep_s):
            try:
                self.sweep()
                if self.reconciler is not None:
                    self.reconciler.maybe_reconcile()
                if self.advancer is not None:
                    self.advancer.maybe_advance()
                self._statistics.maybe()
            except Exception as exc:  # the sweeper must outlive any surprise (SQL away, ...)
                log.warning("lease sweep failed: %s", exc)


class Periodic:
    """Calls ``action`` when asked (``maybe``), at most every ``every_s``."""

    def __init__(
        self,
        every_s: float,
        action: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s = every_s
        self.action = action
        self._clock = clock
        self._next = 0.0

    def maybe(self) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.every_s
        self.action()


class SweepAdvancer:
    """Advances every running sweep at most every ``every_s`` (each advance
    is idempotent, and serialised on the sweep's row: several workers doing
    it at once is harmless)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        celery: Celery,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.settings = settings
        self.celery = celery
        self._periodic = Periodic(every_s, self.advance_all, clock)

    def maybe_advance(self) -> None:
        self._periodic.maybe()

    def advance_all(self) -> None:
        with self.db.session() as session:
            for sweep_id in sweeps.running_sweep_ids(session):
                sweeps.advance_quietly(session, self.settings, self.celery, sweep_id)
