"""Who trains a run: a lease in Redis, held while one worker trains it.

A task takes ``events.lease_key(run_id)`` with ``SET <token> PX <ttl> NX``
before it touches the run, renews it from a keeper thread for as long as the
task lasts (in one Lua script: only while the value is still its token) and
deletes it, again only if still its own, when the task ends. So:

- a second delivery of a run that a live worker trains finds the lease taken
  and returns without touching the run (Celery acks it);
- a worker killed mid-run stops renewing; its lease expires within the TTL
  and a sweeper (``worker/sweeper.py``) queues the run again;
- a holder that finds its lease taken by another stops training and leaves
  the run to that one;
- a renewal never creates a lease. One that vanished (Redis flushed, or
  restarted without its data; or it expired while its holder was frozen,
  and maybe another worker has trained and finished the run since) is taken
  back on a separate, explicit path, ``_retake``: ``SET <token>:retaking NX``
  (so nobody else can take it meanwhile, and the events that the side
  channel publishes only under the token wait), then ask SQL whether this
  holder's attempt is still the run's and the run not final (``guard``,
  bound once the attempt is taken), and only then put the token back. When
  SQL says no, the holder deletes its claim and stops as lost: a stale
  trainer never gets a run back, while a live one keeps training across a
  Redis flush, sooner than any sweeper acts on a missing lease
  (``LeaseTiming.grace_s``).

SQL is the fence (``Run.attempt``, see ``backend.runs``); the lease makes it
prompt: a trainer learns it is stale at its next renewal instead of at its
next epoch's write.

Timings derive from ``CURVELAB_WORKER_HEARTBEAT_S`` (5 s by default): the
lease is the heartbeat of one run, as the worker key is that of one worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from redis import Redis
from redis.exceptions import RedisError

from backend import events
from backend.settings import Settings

log = logging.getLogger(__name__)

RENEWED, VANISHED, RETAKING, TAKEN = 1, -1, 2, 0
# ARGV: token, ttl ms, the token's retaking claim. Never creates the key.
_RENEW = """
local value = redis.call('GET', KEYS[1])
if value == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if value == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 2
end
if not value then
    return -1
end
return 0
"""
# ARGV: the claim, the token, ttl ms: the claim becomes the lease.
_CONFIRM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""
_RELEASE = """
local value = redis.call('GET', KEYS[1])
if value == ARGV[1] or value == ARGV[2] then
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
        # The value while a vanished lease is being taken back (see _retake).
        self.claim = f"{self.token}:retaking"
        self.timing = timing
        # Set when the run is no longer this holder's (another holder took
        # it, or SQL says a later delivery trains it): training must stop,
        # writing nothing more. The trainer's parts set it too.
        self.lost = threading.Event()
        self._redis = redis
        self._ttl_ms = max(1, int(timing.ttl_s * 1000))
        self._renew = redis.register_script(_RENEW)
        self._confirm = redis.register_script(_CONFIRM)
        self._release = redis.register_script(_RELEASE)
        self._guard: Callable[[], bool] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; RedisError when Redis does not answer."""
        return bool(self._redis.set(self.key, self.token, px=self._ttl_ms, nx=True))

    def guard(self, still_current: Callable[[], bool]) -> None:
        """From now on, take a vanished lease back only while ``still_current()``
        (SQL: this holder's attempt is the run's and the run is not final).
        Before it is bound the holder has written nothing, and its start in
        SQL will make its attempt the current one."""
        self._guard = still_current

    def holder(self) -> str | None:
        try:
            value = self._redis.get(self.key)
        except RedisError:
            return None
        return value.decode() if isinstance(value, bytes) else value

    def renew(self) -> int:
        """RENEWED; TAKEN (another holds it); VANISHED (gone, not re-created);
        RETAKING (this holder's claim of a vanished lease, still unconfirmed)."""
        return int(self._renew(keys=[self.key], args=[self.token, self._ttl_ms, self.claim]))

    def release(self) -> None:
        """Stop renewing and delete the lease (or this holder's claim) if still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timing.renew_s + 10)
        self._drop()

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

    def keep_once(self) -> bool:
        """One renewal (what the keeper thread does every ``renew_s``); False
        once the run is lost. RedisError when Redis does not answer."""
        outcome = self.renew()
        if outcome == RENEWED:
            return True
        if outcome == TAKEN:
            log.error(
                "run %s: its lease is held by %s now; stopping, the run is theirs",
                self.run_id,
                self.holder(),
            )
            self.lost.set()
            return False
        return self._retake(claimed=outcome == RETAKING)

    def _retake(self, claimed: bool) -> bool:
        """Take a vanished lease back: claim, ask SQL, then confirm or give up."""
        if not claimed:
            if not self._redis.set(self.key, self.claim, px=self._ttl_ms, nx=True):
                log.error("run %s: its lease vanished and another took it; stopping", self.run_id)
                self.lost.set()
                return False
            log.warning(
                "run %s: its lease had vanished from Redis (flushed, restarted or expired); "
                "claimed, asking SQL whether the run is still this worker's",
                self.run_id,
            )
        guard = self._guard
        if guard is not None:
            try:
                current = guard()
            except Exception as exc:  # SQL away: keep the claim, ask at the next renewal
                log.warning("run %s: cannot ask SQL about its lease: %s", self.run_id, exc)
                return True
            if not current:
                log.error(
                    "run %s: a later delivery trains it, or it is final; lease not taken back, "
                    "stopping",
                    self.run_id,
                )
                self.lost.set()
                self._drop()
                return False
        if not self._confirm(keys=[self.key], args=[self.claim, self.token, self._ttl_ms]):
            return self.keep_once()  # expired meanwhile (or taken): look again
        log.warning("run %s: lease taken back", self.run_id)
        return True

    def _drop(self) -> None:
        try:
            self._release(keys=[self.key], args=[self.token, self.claim])
        except RedisError as exc:  # it expires on its own
            log.warning("run %s: could not release its lease: %s", self.run_id, exc)

    def _keep(self) -> None:
        failing = False
        while not self._stop.wait(self.timing.renew_s):
            if self.lost.is_set():
                self._drop()  # another part of the trainer saw the run go
                return
            try:
                kept = self.keep_once()
            except RedisError as exc:
                if not failing:
                    log.warning("run %s: cannot renew its lease: %s", self.run_id, exc)
                failing = True
                continue
            if failing:
                log.info("run %s: lease renewed again", self.run_id)
                failing = False
            if not kept:
                return
