"""The Redis contract: key names and the run event stream.

Each run has one Redis Stream. Its entries are the run's events in order:
``status`` (queued, running, succeeded, failed, cancelled, interrupted: an
external run's script stopped by Ctrl-C; pruned: a sweep's pruner stopped
it as hopeless, its reason in ``error``), ``epoch`` (every
Keras log value of a finished epoch, 1-based) and ``batch`` (the training loss
at a fractional epoch). A stream gives replay and live tail in one, and its
entry ids are the SSE ids that a reconnecting client sends back.

SQL is the record, the stream a live view that Redis may lose (flushed,
restarted without its data, trimmed at ``stream_maxlen``). Where the stream
lacks epochs that SQL holds, the SSE endpoint sends them from SQL with the
id ``0-<epoch>`` (``sql_event_id``): below every real stream id (whose first
part is a Unix time in ms), so a client that resumes with such an id gets
the later epochs from SQL and then the whole stream, whose epochs it
already has being skipped.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from redis import Redis

EventType = Literal["status", "epoch", "batch"]
RUN_STATUSES = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
    "pruned",
)
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "interrupted", "pruned"})

_PREFIX = "curvelab"


def stream_key(run_id: str) -> str:
    return f"{_PREFIX}:run:{run_id}:events"


def cancel_key(run_id: str) -> str:
    return f"{_PREFIX}:run:{run_id}:cancel"


def lease_key(run_id: str) -> str:
    """Who trains the run now: a worker's token, with a TTL its holder renews
    (worker/lease.py)."""
    return f"{_PREFIX}:run:{run_id}:lease"


def requeue_key(run_id: str) -> str:
    """Taken (NX, short TTL) by the one sweeper that queues an orphaned run again."""
    return f"{_PREFIX}:run:{run_id}:requeue"


def resend_key(run_id: str) -> str:
    """Taken (NX, TTL one resend period) by the one reconciler that sends a
    stranded queued run's message again (worker/reconciler.py)."""
    return f"{_PREFIX}:run:{run_id}:resend"


def run_memory_key(run_id: str) -> str:
    """The memory its worker was last seen using while training the run
    (worker/celery_app.py's heartbeat): evidence when that worker dies."""
    return f"{_PREFIX}:run:{run_id}:memory"


def worker_exit_key(owner: str) -> str:
    """How the worker process ``owner`` (``host:pid``) exited, written by the
    supervisor that started it (``curvelab up``): a signal, an exit code."""
    return f"{_PREFIX}:worker-exit:{owner}"


def worker_key(hostname: str) -> str:
    return f"{_PREFIX}:worker:{hostname}"


WORKER_KEY_PATTERN = f"{_PREFIX}:worker:*"


def finite_or_none(value: Any) -> float | None:
    """JSON has no NaN or infinity; a diverged loss is stored as null."""
    number = float(value)
    return number if math.isfinite(number) else None


def status_event(status: str, **extra: Any) -> dict[str, Any]:
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    return {"type": "status", "status": status, **extra}


def epoch_event(epoch: int, values: dict[str, Any]) -> dict[str, Any]:
    return {"type": "epoch", "epoch": epoch, **values}


def batch_event(step: int, epoch: float, values: dict[str, Any]) -> dict[str, Any]:
    return {"type": "batch", "step": step, "epoch": epoch, **values}


def encode(event: dict[str, Any]) -> dict[Any, Any]:
    return {"type": event["type"], "data": json.dumps(event, allow_nan=False)}


def decode(fields: dict[Any, Any] | None) -> dict[str, Any]:
    fields = fields or {}
    raw = fields.get("data", fields.get(b"data"))
    if raw is None:
        raise ValueError("stream entry has no 'data' field")
    if isinstance(raw, bytes):
        raw = raw.decode()
    event: dict[str, Any] = json.loads(raw)
    return event


def publish(redis: Redis, run_id: str, event: dict[str, Any], maxlen: int = 100_000) -> str:
    """XADD one event; returns its stream id."""
    entry_id = redis.xadd(stream_key(run_id), encode(event), maxlen=maxlen, approximate=True)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def publish_many(
    redis: Redis, run_id: str, batch: list[dict[str, Any]], maxlen: int = 100_000
) -> None:
    """XADD events in order, in one round trip: an external run's client sends
    thousands of batch points in one request (``curvelab sync``)."""
    with redis.pipeline(transaction=False) as pipe:
        for event in batch:
            pipe.xadd(stream_key(run_id), encode(event), maxlen=maxlen, approximate=True)
        pipe.execute()


_SQL_ID = re.compile(r"^0-(\d{1,9})$")


def sql_event_id(epoch: int) -> str:
    """The SSE id of an epoch sent from SQL: ``0-<epoch>``, before any stream id."""
    return f"0-{epoch}"


def sql_epoch(event_id: str) -> int | None:
    """The epochs a client holds when it resumes with ``0-<epoch>``; None for
    a stream id. ``0-0`` (the start) holds none."""
    match = _SQL_ID.match(event_id)
    return int(match.group(1)) if match else None


def opens_stream(event: dict[str, Any]) -> bool:
    """True for the first event a run's stream gets: its first start, or its
    end before it ever started. A stream that begins otherwise lost its head."""
    if event.get("type") != "status":
        return False
    if event.get("status") == "running":
        return "resumed_at_epoch" not in event
    return event.get("status") in FINAL_STATUSES and not event.get("epochs_done")


def epochs_done_at(event: dict[str, Any]) -> int | None:
    """How many epochs were complete when the event was published, where it says."""
    kind = event.get("type")
    if kind == "epoch":
        return int(event["epoch"])
    if kind == "batch":
        return max(0, math.ceil(float(event["epoch"])) - 1)
    if kind == "status":
        if "epochs_done" in event:
            return int(event["epochs_done"])
        if event.get("status") == "running":
            return int(event.get("resumed_at_epoch") or 1) - 1
    return None
