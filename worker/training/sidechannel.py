"""A run's Redis traffic while it trains, kept off the training thread.

One daemon thread publishes the events the recorder hands it (in order, so
an epoch event always follows that epoch's batch events) and polls the run's
cancel flag every few tenths of a second, setting ``cancelled``. The training
thread only puts dicts on a queue and reads an Event: a slow or dead Redis
delays the live view, never a batch, and never fails the run.

Events that Redis refuses (it is restarting, say) wait in a bounded backlog
and go out, still in order, once it answers again, so the stream keeps every
epoch across a Redis restart; at ``close`` the thread tries for ``drain_s``
more, then drops what is left (SQL has the epochs; the SSE endpoint fills
them in from there).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from types import TracebackType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from backend import events, runs

log = logging.getLogger(__name__)

POLL_S = 0.3
RETRY_S = 0.5  # between tries to publish while Redis refuses
DRAIN_S = 3.0  # at close, how long to keep trying to publish the backlog
BACKLOG = 20_000  # events kept while Redis refuses; the oldest go first
_STOP = object()


class SideChannel:
    def __init__(
        self,
        redis: Redis | None,
        run_id: str,
        poll_s: float = POLL_S,
        maxlen: int = 100_000,
        drain_s: float = DRAIN_S,
    ) -> None:
        self.run_id = run_id
        self._maxlen = maxlen
        self._drain_s = drain_s
        self._backlog: deque[dict[str, Any]] = deque(maxlen=BACKLOG)
        self._failing = False
        self.cancelled = threading.Event()
        self._redis = redis
        self._poll_s = poll_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._loop, name=f"curvelab-sidechannel-{run_id[:8]}", daemon=True
        )

    def publish(self, event: dict[str, Any]) -> None:
        """Queue an event for the run's stream; returns at once."""
        self._queue.put(event)

    def start(self) -> SideChannel:
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is queued, then stop. A Redis that hangs is left
        behind (the thread is a daemon) rather than holding up the run."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("run %s: Redis side channel did not drain in %.0fs", self.run_id, timeout)

    def __enter__(self) -> SideChannel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _loop(self) -> None:
        next_poll = time.monotonic()
        retry_at = 0.0
        stop_at: float | None = None
        while True:
            wake = next_poll if stop_at is None else stop_at
            if self._backlog:
                wake = min(wake, retry_at)
            try:
                item = self._queue.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                stop_at = time.monotonic() + self._drain_s
            elif item is not None:
                if len(self._backlog) == self._backlog.maxlen:
                    log.warning("run %s: Redis backlog full; oldest event dropped", self.run_id)
                self._backlog.append(item)
            try:
                if self._backlog and time.monotonic() >= retry_at and not self._flush():
                    retry_at = time.monotonic() + RETRY_S
                if stop_at is None and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self._poll_s
                    if self._redis is not None and runs.cancel_requested(self._redis, self.run_id):
                        self.cancelled.set()
            except Exception as exc:  # the side channel must outlive any surprise
                log.warning("run %s: Redis side channel: %s", self.run_id, exc)
            if stop_at is not None and (not self._backlog or time.monotonic() >= stop_at):
                if self._backlog:
                    log.warning(
                        "run %s: %d events not published (Redis unreachable)",
                        self.run_id,
                        len(self._backlog),
                    )
                return

    def _flush(self) -> bool:
        """Publish the backlog in order; False when Redis refused (kept for later)."""
        if self._redis is None:
            self._backlog.clear()
            return True
        while self._backlog:
            try:
                events.publish(self._redis, self.run_id, self._backlog[0], maxlen=self._maxlen)
            except RedisError as exc:
                if not self._failing:
                    log.warning(
                        "run %s: Redis refuses events (%s); keeping them to publish later",
                        self.run_id,
                        exc,
                    )
                self._failing = True
                return False
            except (TypeError, ValueError) as exc:  # not JSON: no retry will help
                log.warning("run %s: event dropped: %s", self.run_id, exc)
            self._backlog.popleft()
        if self._failing:
            log.info("run %s: Redis answers again; backlog published", self.run_id)
            self._failing = False
        return True
