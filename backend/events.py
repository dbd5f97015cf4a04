"""The Redis contract: key names and the run event stream.

Each run has one Redis Stream. Its entries are the run's events in order:
``status`` (queued, running, succeeded, failed, cancelled), ``epoch`` (every
Keras log value of a finished epoch, 1-based) and ``batch`` (the training loss
at a fractional epoch). A stream gives replay and live tail in one, and its
entry ids are the SSE ids that a reconnecting client sends back.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from redis import Redis

EventType = Literal["status", "epoch", "batch"]
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

_PREFIX = "curvelab"


def stream_key(run_id: str) -> str:
    return f"{_PREFIX}:run:{run_id}:events"


def cancel_key(run_id: str) -> str:
    return f"{_PREFIX}:run:{run_id}:cancel"


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


def decode(fields: dict[Any, Any]) -> dict[str, Any]:
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
