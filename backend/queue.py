"""The Celery app's configuration and the one task name: shared by the API
(which only sends) and the worker (which registers and runs the task); and
the one reader of what the broker holds (``broker_view``), for the worker's
reconciler that sends again a queued run whose message is nowhere.

Kept here, not in worker/, so that sending a task never imports TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from celery import Celery
from redis import Redis

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


# -- What the broker holds: kombu 5.7's Redis transport (kombu/transport/redis.py).
# A queue is a Redis list named after it, plus one list per priority step
# ("training\x06\x163" ...: ``Channel._q_for_pri``, sep "\x06\x16", steps 0 3 6 9);
# each item is a JSON message whose ``headers.id`` is the Celery task id. A
# delivered message not acked yet is in the hash "unacked" (delivery tag ->
# JSON [message, exchange, routing key]) and the sorted set "unacked_index"
# (delivery tag -> when it was delivered), until its ack, or until the
# visibility timeout puts it back in the list.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"


def queue_lists(queue: str = QUEUE) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages."""
    return [queue] + [f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS if step]


def _task_id(raw: str | bytes) -> str | None:
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # an unacked entry: [message, exchange, routing key]
            message = message[0]
        task_id = message["headers"]["id"]
    except (ValueError, LookupError, TypeError):
        return None  # not a Celery protocol 2 message: not ours
    return task_id if isinstance(task_id, str) else None


@dataclass(frozen=True)
class BrokerView:
    """The training tasks the broker holds now, by task id (= run id)."""

    waiting: frozenset[str]  # in the queue's lists, not delivered yet
    delivered: dict[str, float]  # delivered, not acked: id -> when (Unix time), latest

    def holds(self, task_id: str, delivered_after: float) -> bool:
        """Waiting, or delivered after ``delivered_after`` (an older unacked
        delivery whose run no worker leases belongs to a worker that died
        before taking the lease: the broker gives it back only after the
        visibility timeout, days)."""
        return task_id in self.waiting or self.delivered.get(task_id, -1.0) > delivered_after


def broker_view(redis: Redis, queue: str = QUEUE) -> BrokerView:
    """Read the queue's lists and the unacked deliveries (RedisError when
    Redis does not answer). Reads every waiting message: meant for a look
    now and then, not for every request."""
    pipe = redis.pipeline(transaction=False)
    for name in queue_lists(queue):
        pipe.lrange(name, 0, -1)
    pipe.hgetall(UNACKED_KEY)
    pipe.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True)
    *lists, unacked, index = pipe.execute()
    waiting = {task_id for items in lists for raw in items if (task_id := _task_id(raw))}
    when = {_text(tag): float(score) for tag, score in index}
    delivered: dict[str, float] = {}
    for tag, raw in unacked.items():
        task_id = _task_id(raw)
        if task_id is not None:
            at = when.get(_text(tag), 0.0)
            delivered[task_id] = max(at, delivered.get(task_id, 0.0))
    return BrokerView(frozenset(waiting), delivered)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
