"""The worker's Celery app: the shared configuration from ``backend.queue``,
this package's tasks, a heartbeat the API counts as a live worker (and reads
its memory budget from), and the lease sweeper that queues again the runs of
a worker that died (``worker/sweeper.py``) and sends again the queued runs
whose message was lost (``worker/reconciler.py``).

Run with the solo pool, one task at a time, so TensorFlow is never forked
after it is imported (tensorflow#57877)::

    python -m celery -A worker.celery_app:app worker --pool=solo \
        --concurrency=1 --queues=training --loglevel=INFO
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from redis import Redis
from redis.exceptions import RedisError

from backend import events, workers
from backend.db import Database
from backend.queue import make_celery
from backend.settings import Settings, get_settings
from worker import memory_budget
from worker.lease import LeaseTiming, owner_name
from worker.reconciler import QueueReconciler
from worker.sweeper import LeaseSweeper, SweepAdvancer

log = logging.getLogger(__name__)

app = make_celery(get_settings())
# Imported when the worker starts, not here: sending a task never loads Keras.
app.conf.include = ["worker.tasks"]
app.conf.update(
    # A restarted Redis is waited for, however long it takes, not given up
    # on after 100 tries (the worker would exit). With the solo pool a lost
    # connection is noticed once the running task ends; the task itself goes
    # on (its side channel keeps the events until Redis answers).
    broker_connection_retry=True,
    broker_connection_max_retries=None,
    worker_cancel_long_running_tasks_on_connection_loss=False,
)


# The run this process trains now (the solo pool trains one at a time): the
# heartbeat notes its memory, evidence should the process die.
_training: str | None = None


@contextlib.contextmanager
def training(run_id: str) -> Iterator[None]:
    global _training
    _training = run_id
    try:
        yield
    finally:
        _training = None


class Heartbeat:
    """Refreshes ``events.worker_key(hostname)`` with a TTL of three beats.

    A solo-pool worker busy training answers no Celery ping; this thread
    keeps beating through a training, and the key expires soon after the
    worker dies, however it dies. The value says who it is (``host:pid``),
    its memory budget and use (backend/workers.py); while it trains a run,
    the run's memory record is refreshed too.
    """

    def __init__(self, settings: Settings, hostname: str) -> None:
        self.key = events.worker_key(hostname)
        self.interval = settings.worker_heartbeat_s
        self.owner = owner_name()
        self.memory_mb = memory_budget.budget_mb(settings)
        self.redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="curvelab-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 5)
        with contextlib.suppress(RedisError):  # it expires on its own
            self.redis.delete(self.key)

    def _run(self) -> None:
        ttl_ms = int(self.interval * 3 * 1000)
        while not self._stop.is_set():
            run_id, rss = _training, memory_budget.rss_mb()
            value = workers.beat_value(self.owner, self.memory_mb, rss, run_id, os.getpid())
            try:
                self.redis.set(self.key, json.dumps(value), px=ttl_ms)
                if run_id is not None:
                    workers.record_run_memory(self.redis, run_id, self.owner, rss, self.memory_mb)
            except RedisError as exc:
                log.warning("worker heartbeat: %s", exc)
            self._stop.wait(self.interval)


_heartbeat: Heartbeat | None = None
_sweeper: LeaseSweeper | None = None


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    global _heartbeat, _sweeper
    settings = get_settings()
    hostname = getattr(sender, "hostname", None) or app.conf.get("worker_hostname") or "worker"
    _heartbeat = Heartbeat(settings, str(hostname))
    _heartbeat.start()
    log.info(
        "worker heartbeat on %s every %.1fs; memory budget %.0f MiB",
        _heartbeat.key,
        _heartbeat.interval,
        _heartbeat.memory_mb,
    )
    settings.ensure_dirs()
    timing = LeaseTiming.from_settings(settings)
    database = Database(settings.sqlalchemy_url)
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    _sweeper = LeaseSweeper(
        database,
        redis,
        app,
        timing,
        max_deaths=settings.max_delivery_deaths,
        reconciler=QueueReconciler(database, redis, app, settings.queue_resend_s),
        advancer=SweepAdvancer(database, settings, app),
    )
    _sweeper.start()
    log.info(
        "lease sweep every %.1fs: a run whose lease is missing for %.1fs is queued again "
        "(failed after %d deaths in a row); a run queued %.0fs with no message is sent again",
        timing.sweep_s,
        timing.grace_s,
        settings.max_delivery_deaths,
        settings.queue_resend_s,
    )


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()
    if _heartbeat is not None:
        _heartbeat.stop()
