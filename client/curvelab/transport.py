"""The side channel of a fit: every request on one background thread, so a
slow or unreachable server never blocks an epoch.

The training thread only appends to the run's spool (spool.py: a local file
and the records in memory) and wakes this thread. The thread sends the
pending records in order (a create before its epochs; consecutive epochs or
batch points merged into one request), marks each acknowledged one in the
spool, and retries what did not get through with exponential backoff
(jittered, capped). A record the server refuses for good (a 4xx other than
408/429) is logged and dropped; 401/403 stop sending (the spool stays for
``curvelab sync`` with the right token). When the queue is idle it uploads
spools earlier fits of the same server left behind.

``close`` waits a bounded time for the rest; whatever is still unsent stays
in the spool, with a warning naming the ``curvelab sync`` command. Nothing in
here raises into the fit: failures are logged.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from curvelab import wire
from curvelab.env import auth_headers
from curvelab.spool import Record, Spool

log = logging.getLogger("curvelab")


class Backoff:
    """Exponential delays with jitter: base·2ⁿ, capped, each drawn in [½, 1]
    of that so that many clients do not retry in step."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


class Transport:
    def __init__(
        self,
        spool: Spool,
        token: str | None,
        *,
        leftovers: Sequence[Path] = (),
        backoff: Backoff | None = None,
    ) -> None:
        self.spool = spool
        self.headers = auth_headers(token)
        self.backoff = backoff or Backoff()
        self.leftovers = list(leftovers)  # paths of earlier fits' spools
        self._current: Spool | None = None
        self.denied = False
        self.last_error: str | None = None
        self._wake = threading.Condition()
        self._closing = False
        self._deadline: float | None = None
        self._abandoned = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"curvelab-transport-{spool.run_id[:8]}", daemon=True
        )
        self._thread.start()

    # --- the training thread's side ----------------------------------------

    def submit(self, op: str, body: dict[str, Any] | None = None, file: str | None = None) -> None:
        """Spool a record and wake the sender. Never raises."""
        try:
            self.spool.append(op, body, file)
        except Exception:
            log.warning("curvelab: could not spool a %s record", op, exc_info=True)
            return
        with self._wake:
            self._wake.notify()

    def close(self, timeout: float) -> bool:
        """Send what is pending for at most ``timeout`` seconds, then stop.
        True: everything was sent (the spool is deleted)."""
        with self._wake:
            self._closing = True
            self._deadline = time.monotonic() + max(timeout, 0.0)
            self._wake.notify()
        # A request in flight at the deadline ends within its own timeout.
        self._thread.join(max(timeout, 0.0) + (wire.TIMEOUT.read or 5.0) + 1.0)
        if self._thread.is_alive():
            self._abandoned.set()
        try:
            deleted = self.spool.close()
        except Exception:
            log.warning("curvelab: could not close the spool %s", self.spool.path, exc_info=True)
            return False
        if not deleted:
            left = len(self.spool.pending())
            why = f" (last error: {self.last_error})" if self.last_error else ""
            log.warning(
                "curvelab: %d record(s) of run %s were not sent%s; they are kept in %s: "
                "`curvelab sync %s` uploads them",
                left,
                self.spool.run_id,
                why,
                self.spool.path,
                self.spool.path,
            )
        return deleted

    # --- the sender thread --------------------------------------------------

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=wire.TIMEOUT) as client:
                self._loop(client)
        except Exception:
            log.warning("curvelab: the transport thread failed", exc_info=True)

    def _loop(self, client: httpx.Client) -> None:
        try:
            while not self._abandoned.is_set():
                pending = [] if self.denied else self.spool.pending()
                if pending:
                    group = wire.next_request(pending)
                    for records, reply in wire.deliver(client, self.spool, group, self.headers):
                        if not self._settle(self.spool, records, reply):
                            self._sleep(self.backoff.next())
                    continue
                with self._wake:
                    if self._closing:
                        return
                    if not self.leftovers or self.denied:
                        self._wake.wait(1.0)
                        continue
                # Idle: an earlier fit's spool, one request at a time, so that
                # this run's next record waits for one request at most.
                self._leftover_step(client)
        finally:
            self._drop_leftovers()

    def _settle(self, spool: Spool, group: list[Record], reply: wire.Reply) -> bool:
        """Acknowledge or keep the records after a reply; False: retry later."""
        if reply.outcome is wire.Outcome.RETRY:
            self.last_error = reply.detail
            log.debug("curvelab: %s; retrying", reply.detail)
            return False
        if reply.outcome is wire.Outcome.DENIED:
            self.last_error = reply.detail
            self.denied = True
            log.warning(
                "curvelab: the server refused the token (%s); nothing more is sent, "
                "the records stay in %s",
                reply.detail,
                spool.path,
            )
            return True
        if reply.outcome is wire.Outcome.DROPPED:
            if group[0].op == "create" and "409" in reply.detail:
                log.info("curvelab: %s", reply.detail)
            else:
                log.warning("curvelab: the server refused a record, dropped: %s", reply.detail)
        self.backoff.reset()
        if not self._abandoned.is_set():
            spool.ack(record.seq for record in group)
        return True

    def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less when closing reaches its deadline."""
        with self._wake:
            if self._deadline is not None:
                delay = min(delay, self._deadline - time.monotonic())
                if delay <= 0:
                    self._abandoned.set()  # out of time: the rest stays spooled
                    return
            self._wake.wait(delay)
        if self._closing and self._deadline is not None and time.monotonic() >= self._deadline:
            self._abandoned.set()

    def _leftover_step(self, client: httpx.Client) -> None:
        if self._current is None:
            self._current = _open(self.leftovers[0])
            if self._current is None:  # gone, unreadable, or a live fit's
                self.leftovers.pop(0)
                return
        spool = self._current
        pending = spool.pending()
        if not pending:
            self.leftovers.pop(0)
            self._current = None
            spool.close()
            log.info("curvelab: uploaded the leftover spool %s", spool.path)
            return
        group = wire.next_request(pending)
        for records, reply in wire.deliver(client, spool, group, self.headers):
            if reply.outcome in (wire.Outcome.RETRY, wire.Outcome.DENIED):
                # Not now: leave them for a later fit or `curvelab sync`.
                self._drop_leftovers()
                return
            self._settle(spool, records, reply)

    def _drop_leftovers(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        self.leftovers = []


def _open(path: Path) -> Spool | None:
    """A leftover spool, read afresh (a sync may have sent some since) and
    locked for acknowledgements; None when it is gone or in use."""
    try:
        spool = Spool.read(path)
        return spool if spool.open_for_ack() else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
