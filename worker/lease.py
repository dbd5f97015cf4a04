"""Who trains a run: a lease in Redis, held while one worker trains it.

A task takes ``events.lease_key(run_id)`` with ``SET <token> PX <ttl> NX``
before it touches the run, renews it from a keeper thread for as long as the
task lasts (in one Lua script: only while the value is still its token) and
deletes it, again only if still its own, when the task ends. So:

- a second delivery of a run that a live worker trains finds the lease taken
  and returns without touching the run (Celery acks it);
- a worker killed mid-run stops renewing; its lease expires within the TTL
  and a sweeper (``worker/sweeper.py``) queues the run again;
- a lease that vanished while its holder lives (Redis flushed, or restarted
  without its data) is taken back by the holder's next renewal, sooner than
  any sweeper acts on a missing lease (``LeaseTiming.grace_s``);
- a holder that finds its lease taken by another stops training and leaves
  the run to that one.

Timings derive from ``CURVELAB_WORKER_HEARTBEAT_S`` (5 s by default): the
lease is the heartbeat of one run, as the worker key is that of one worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from types import TracebackType

from redis import Redis
from redis.exceptions import RedisError

from backend import events
from backend.settings import Settings

log = logging.getLogger(__name__)

# 1: renewed; 2: it had vanished and is ours again; 0: another holder has it.
_RENEW = """
local value = redis.call('GET', KEYS[1])
if value == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if not value then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 2
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class LeaseTiming:
    renew_s: float  # a holder renews this often
    ttl_s: float  # three renewals: a holder may miss two
    sweep_s: float  # each worker's sweeper looks this often
    grace_s: float  # a running run's lease stays missing this long before a requeue

    @classmethod
    def from_settings(cls, settings: Settings) -> LeaseTiming:
        beat = settings.worker_heartbeat_s
        # grace > renew_s: a live holder whose lease was flushed takes it
        # back at its next renewal, before any sweeper may act.
        return cls(renew_s=beat, ttl_s=3 * beat, sweep_s=beat, grace_s=2 * beat)


def owner_name() -> str:
    """This process, as a lease holder: a person reading Redis can find it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RunLease:
    """One task's hold on one run: ``acquire``, then ``with lease.kept():``."""

    def __init__(self, redis: Redis, run_id: str, timing: LeaseTiming, owner: str = "") -> None:
        self.run_id = run_id
        self.key = events.lease_key(run_id)
        self.token = f"{owner or owner_name()}:{uuid.uuid4().hex[:12]}"
        self.timing = timing
        # Set when another holder took the run: training must stop, untouched.
        self.lost = threading.Event()
        self._redis = redis
        self._ttl_ms = max(1, int(timing.ttl_s * 1000))
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; RedisError when Redis does not answer."""
        return bool(self._redis.set(self.key, self.token, px=self._ttl_ms, nx=True))

    def holder(self) -> str | None:
        try:
            value = self._redis.get(self.key)
        except RedisError:
            return None
        return value.decode() if isinstance(value, bytes) else value

    def renew(self) -> int:
        """1 renewed, 2 taken back after it vanished, 0 held by another."""
        return int(self._renew(keys=[self.key], args=[self.token, self._ttl_ms]))

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timing.renew_s + 10)
        try:
            self._release(keys=[self.key], args=[self.token])
        except RedisError as exc:  # it expires on its own
            log.warning("run %s: could not release its lease: %s", self.run_id, exc)

    def kept(self) -> RunLease:
        """Renew from a daemon thread until ``release`` (the context's exit)."""
        self._thread = threading.Thread(
            target=self._keep, name=f"curvelab-lease-{self.run_id[:8]}", daemon=True
        )
        self._thread.start()
        return self

    def __enter__(self) -> RunLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _keep(self) -> None:
        failing = False
        while not self._stop.wait(self.timing.renew_s):
            try:
                outcome = self.renew()
            except RedisError as exc:
                if not failing:
                    log.warning("run %s: cannot renew its lease: %s", self.run_id, exc)
                failing = True
                continue
            if failing:
                log.info("run %s: lease renewed again", self.run_id)
                failing = False
            if outcome == 2:
                log.warning(
                    "run %s: its lease had vanished from Redis (flushed or restarted?); taken back",
                    self.run_id,
                )
            elif outcome == 0:
                log.error(
                    "run %s: its lease is held by %s now; stopping, the run is theirs",
                    self.run_id,
                    self.holder(),
                )
                self.lost.set()
                return
