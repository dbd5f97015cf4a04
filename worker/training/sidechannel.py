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

With the run's lease (worker/lease.py) every event is added in one Lua
script, and only while the lease holds this trainer's token: a trainer that
lost the run (frozen past its lease, woken after another took it on) puts
nothing on the stream. While the lease is missing or being taken back,
events wait in the backlog as they do while Redis refuses; once another
holds it, or the trainer's ``lost`` is set, the backlog and every later
event are dropped, and ``lost`` is set for the rest of the trainer.
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
from worker.lease import RunLease

log = logging.getLogger(__name__)

POLL_S = 0.3
RETRY_S = 0.5  # between tries to publish while Redis refuses
DRAIN_S = 3.0  # at close, how long to keep trying to publish the backlog
BACKLOG = 20_000  # events kept while Redis refuses; the oldest go first
_STOP = object()
# KEYS: lease, stream. ARGV: token, its retaking claim, maxlen, then the fields.
# The entry id when added; 0: the lease is missing or being taken back (wait);
# -1: another holds it (never).
_FENCED_XADD = """
local value = redis.call('GET', KEYS[1])
if value == ARGV[1] then
    return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
end
if not value or value == ARGV[2] then
    return 0
end
return -1
"""


class SideChannel:
    def __init__(
        self,
        redis: Redis | None,
        run_id: str,
        poll_s: float = POLL_S,
        maxlen: int = 100_000,
        drain_s: float = DRAIN_S,
        lease: RunLease | None = None,
        lost: threading.Event | None = None,
    ) -> None:
        self.run_id = run_id
        self._lease = lease
        # Set by whichever part of the trainer sees the run go first.
        self.lost = lost if lost is not None else lease.lost if lease else threading.Event()
        self._fenced_xadd = (
            redis.register_script(_FENCED_XADD) if redis is not None and lease is not None else None
        )
        self._waiting = False  # for the lease: said once in the log
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
        if not self.lost.is_set():
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
        redis = self._redis
        if redis is None:
            self._backlog.clear()
            return True
        while self._backlog:
            if self.lost.is_set():
                self._drop_all("the run is another's")
                return True
            try:
                if not self._add(redis, self._backlog[0]):
                    return False
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

    def _add(self, redis: Redis, event: dict[str, Any]) -> bool:
        """XADD one event (under the lease when there is one); False: wait
        for the lease. True when it is out of the backlog: added, or refused
        for good. RedisError while Redis refuses."""
        if self._fenced_xadd is None or self._lease is None:
            events.publish(redis, self.run_id, event, maxlen=self._maxlen)
            return True
        fields = [part for pair in events.encode(event).items() for part in pair]
        added = self._fenced_xadd(
            keys=[self._lease.key, events.stream_key(self.run_id)],
            args=[self._lease.token, self._lease.claim, self._maxlen, *fields],
        )
        if added == 0:
            if not self._waiting:
                log.info("run %s: its lease is missing; events wait for it", self.run_id)
            self._waiting = True
            return False
        if added == -1:  # the rest goes at the next turn of _flush
            log.warning("run %s: its lease is another's; publishing nothing more", self.run_id)
            self.lost.set()
            return True
        self._waiting = False
        return True

    def _drop_all(self, why: str) -> None:
        if self._backlog:
            log.warning("run %s: %d events not published: %s", self.run_id, len(self._backlog), why)
        self._backlog.clear()
