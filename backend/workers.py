"""What a live worker says about itself: its heartbeat value in Redis.

Each training worker refreshes ``events.worker_key(hostname)`` with a short
TTL (worker/celery_app.py); the value is one JSON object, built and read here
only, so the worker that writes it and the API and sweepers that read it
agree on one format:

- ``owner``: ``host:pid``, as its run leases name it (worker/lease.py);
- ``memory_mb``: its budget for training (CURVELAB_WORKER_MEMORY_MB, or a
  share of its cgroup limit or of the machine's RAM);
- ``rss_mb``: what the process uses now; ``run``: the run it trains, if any.

The supervisor that started a worker (``curvelab up``) records how it
exited (``record_exit``): a signal says what killed it.

The run it trains gets a record of its own (``events.run_memory_key``) that
outlives the worker: when the worker dies, the sweeper says from it how much
memory the run was last seen using.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from backend import events

# A run's memory record outlives its worker long enough to explain its death.
RUN_MEMORY_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class WorkerBeat:
    hostname: str
    owner: str | None
    memory_mb: float | None
    rss_mb: float | None
    run: str | None


def beat_value(
    owner: str, memory_mb: float, rss_mb: float, run: str | None, pid: int
) -> dict[str, Any]:
    return {
        "pid": pid,
        "at": time.time(),
        "owner": owner,
        "memory_mb": round(memory_mb, 1),
        "rss_mb": round(rss_mb, 1),
        "run": run,
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def parse_beat(hostname: str, raw: bytes | str | None) -> WorkerBeat | None:
    """A heartbeat value; None for a missing key. An older worker's value
    (no memory fields, or not JSON) reads as a beat that says nothing more."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = {}
    if not isinstance(value, dict):
        value = {}
    owner, run = value.get("owner"), value.get("run")
    return WorkerBeat(
        hostname=hostname,
        owner=owner if isinstance(owner, str) else None,
        memory_mb=_number(value.get("memory_mb")),
        rss_mb=_number(value.get("rss_mb")),
        run=run if isinstance(run, str) else None,
    )


def live_workers(redis: Redis) -> list[WorkerBeat]:
    """Every worker whose heartbeat key is in Redis now (RedisError when
    Redis does not answer)."""
    prefix = events.worker_key("")
    keys = list(redis.scan_iter(events.WORKER_KEY_PATTERN))
    if not keys:
        return []
    beats = []
    for key, raw in zip(keys, redis.mget(keys), strict=True):
        name = key.decode() if isinstance(key, bytes) else str(key)
        beat = parse_beat(name.removeprefix(prefix), raw)
        if beat is not None:
            beats.append(beat)
    return beats


def largest_budget_mb(redis: Redis) -> float | None:
    """The largest memory budget a live worker states; None when none does."""
    budgets = [beat.memory_mb for beat in live_workers(redis) if beat.memory_mb]
    return max(budgets) if budgets else None


def training_budget_mb(redis: Redis, configured_mb: float | None) -> float | None:
    """What a run may use: the largest live worker's budget; with no live
    worker (or Redis away), the configured one (CURVELAB_WORKER_MEMORY_MB);
    None: nothing is known, nothing is refused."""
    try:
        live = largest_budget_mb(redis)
    except RedisError:
        live = None
    return live if live is not None else configured_mb


def record_run_memory(
    redis: Redis, run_id: str, owner: str, rss_mb: float, memory_mb: float
) -> None:
    """Note what the run's worker uses now, and the most it was seen using."""
    key = events.run_memory_key(run_id)
    previous = read_run_memory(redis, run_id) or {}
    peak = rss_mb
    if previous.get("owner") == owner and isinstance(previous.get("peak_rss_mb"), int | float):
        peak = max(peak, float(previous["peak_rss_mb"]))
    value = {
        "owner": owner,
        "rss_mb": round(rss_mb, 1),
        "peak_rss_mb": round(peak, 1),
        "memory_mb": round(memory_mb, 1),
        "at": time.time(),
    }
    redis.set(key, json.dumps(value), ex=RUN_MEMORY_TTL_S)


def read_run_memory(redis: Redis, run_id: str) -> dict[str, Any] | None:
    raw = redis.get(events.run_memory_key(run_id))
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# A worker's exit, as its supervisor saw it: kept long enough for a sweeper
# to read when the worker's run lease expires (seconds), not for history.
EXIT_TTL_S = 3600


def record_exit(redis: Redis, owner: str, code: int) -> None:
    """``code`` as subprocess reports it: negative, killed by signal -code."""
    redis.set(events.worker_exit_key(owner), json.dumps({"code": code}), ex=EXIT_TTL_S)


def read_exit(redis: Redis, owner: str) -> int | None:
    raw = redis.get(events.worker_exit_key(owner))
    if raw is None:
        return None
    try:
        code = json.loads(raw)["code"]
    except (ValueError, LookupError, TypeError):
        return None
    return code if isinstance(code, int) else None
