"""A run's Redis traffic while it trains, kept off the training thread.

One daemon thread publishes the events the recorder hands it (in order, so
an epoch event always follows that epoch's batch events) and polls the run's
cancel flag every few tenths of a second, setting ``cancelled``. The training
thread only puts dicts on a queue and reads an Event: a slow or dead Redis
delays the live view, never a batch, and never fails the run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from types import TracebackType
from typing import Any

from redis import Redis

from backend import runs

log = logging.getLogger(__name__)

POLL_S = 0.3
_STOP = object()


class SideChannel:
    def __init__(
        self, redis: Redis | None, run_id: str, poll_s: float = POLL_S, maxlen: int = 100_000
    ) -> None:
        self.run_id = run_id
        self._maxlen = maxlen
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
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if item is not None:
                    runs.publish_quietly(self._redis, self.run_id, item, self._maxlen)
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self._poll_s
                    if self._redis is not None and runs.cancel_requested(self._redis, self.run_id):
                        self.cancelled.set()
            except Exception as exc:  # the side channel must outlive any surprise
                log.warning("run %s: Redis side channel: %s", self.run_id, exc)
