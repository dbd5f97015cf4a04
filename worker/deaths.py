"""Why a delivery's worker is gone, in words: the evidence the lease sweeper
(worker/sweeper.py) gathers before it queues the run again or, after
CURVELAB_MAX_DELIVERY_DEATHS deaths in a row, fails it.

What is seen, where it is seen:

- who trained it: ``Run.holder``, the lease token ``host:pid:<id>`` of the
  delivery (runs.mark_running);
- whether that process still lives: its heartbeat (backend/workers.py); a
  live one lost only its lease (Redis flushed): no death;
- how it exited: the supervisor that started it (``curvelab up``,
  backend/cli/up.py) records a signal or exit code under
  ``events.worker_exit_key(host:pid)``; elsewhere (compose, a bare
  ``celery worker``) it is unknown;
- its memory: the heartbeat's record of the run (``events.run_memory_key``):
  last and peak RSS, and the worker's budget.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from backend import workers
from backend.db import Run

# host:pid, optionally followed by the lease's own id (worker/lease.py).
_HOLDER = re.compile(r"^(?P<owner>.+?:\d+)(?::[0-9a-f]+)?$")
# What to change when a training does not fit: the fields that size it.
SHRINK = "lower image_size, filters, dense_units or batch_size"


def owner_of(holder: str | None) -> str | None:
    """``host:pid`` of a lease token (or of ``host:pid`` itself)."""
    if not holder:
        return None
    match = _HOLDER.match(holder)
    return match.group("owner") if match else holder


@dataclass(frozen=True)
class Exit:
    code: int  # negative: killed by signal -code, as subprocess reports it

    @property
    def signal(self) -> int | None:
        return -self.code if self.code < 0 else None

    def describe(self) -> str:
        if self.signal is None:
            return f"exited with code {self.code}"
        try:
            name = signal.Signals(self.signal).name
        except ValueError:
            return f"was killed by signal {self.signal}"
        return f"was killed by signal {self.signal} ({name})"


def read_exit(redis: Redis, owner: str) -> Exit | None:
    try:
        code = workers.read_exit(redis, owner)
    except RedisError:
        return None
    return Exit(code) if code is not None else None


def alive(redis: Redis, owner: str | None, run_id: str) -> bool:
    """Whether a live worker's heartbeat says ``owner`` trains the run now
    (RedisError passes). The run too, not the name alone: a container's
    restarted worker has the same host name and pid as the one that died."""
    return owner is not None and any(
        beat.owner == owner and beat.run == run_id for beat in workers.live_workers(redis)
    )


def _memory(redis: Redis, run_id: str, owner: str | None) -> dict[str, Any] | None:
    try:
        record = workers.read_run_memory(redis, run_id)
    except RedisError:
        return None
    if record is None or (owner is not None and record.get("owner") != owner):
        return None  # another delivery's figures
    return record


def is_death(seen_exit: Exit | None) -> bool:
    """A worker that exited 0 stopped on request (its run was "interrupted"
    and queued again by itself, or should have been): no death."""
    return seen_exit is None or seen_exit.code != 0


def describe(redis: Redis, run: Run, deaths: int, seen_exit: Exit | None) -> str:
    """The message of a run failed after ``deaths`` deliveries died, e.g. "the
    worker training it (host:42) was killed by signal 9 (SIGKILL) while
    training epoch 1, 3 deliveries in a row; last seen using 900 MiB of its
    1000 MiB budget: likely out of memory; lower image_size, ..."."""
    owner = owner_of(run.holder)
    who = f"the worker training it ({owner})" if owner else "the worker training it"
    how = seen_exit.describe() if seen_exit else "died (its lease expired, no exit status seen)"
    text = f"{who} {how} while training epoch {run.epochs_done + 1}, {deaths} deliveries in a row"
    memory = _memory(redis, run.id, owner)
    if memory is not None:
        peak, budget = memory.get("peak_rss_mb"), memory.get("memory_mb")
        if isinstance(peak, int | float):
            text += f"; last seen using {peak:.0f} MiB"
            if isinstance(budget, int | float):
                text += f" of its {budget:.0f} MiB budget"
    if seen_exit is not None and seen_exit.signal == signal.SIGKILL:
        # The kernel's OOM killer (a cgroup's limit, or the machine's) sends SIGKILL.
        return f"{text}: likely out of memory; {SHRINK}"
    return f"{text}; if it ran out of memory, {SHRINK}"
