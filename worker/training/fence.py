"""Fence: one trainer's right to write its run, and what it does once it has none.

``runs.mark_running`` gives each delivery that trains a run a new
``Run.attempt``; only the current attempt of a run that is not final may
write. SQL rows check it themselves (``record_epoch``, ``rewind``,
``finish``, ``evaluations.store``); files are checked with ``holds`` just
before they are renamed into place (``artifacts.save_model``), and the
Redis side channel publishes only under the run's lease.

``lost`` is one Event for the whole trainer: the lease keeper sets it when
another holder has the run, the recorder when SQL refuses an epoch, any
write when ``holds`` says no. Once set, training stops at the next batch and
nothing more is written: no epoch, batch point, event, checkpoint, model,
evaluation, history or status.
"""

from __future__ import annotations

import logging
import threading

from backend import runs
from backend.db import Database

log = logging.getLogger(__name__)


class Fence:
    def __init__(
        self,
        db: Database,
        run_id: str,
        attempt: int | None,
        lost: threading.Event | None = None,
    ) -> None:
        self.db = db
        self.run_id = run_id
        # None: a trainer outside a worker (tests, benchmarks), never fenced by SQL.
        self.attempt = attempt
        self.lost = lost if lost is not None else threading.Event()
        self._told = threading.Lock()

    def current(self) -> bool:
        """SQL's word: this attempt is the run's and the run is not final."""
        if self.attempt is None:
            return True
        with self.db.session() as session:
            return runs.is_current(session, self.run_id, self.attempt)

    def holds(self) -> bool:
        """True while this trainer may still write; gives up when SQL says no."""
        if self.lost.is_set():
            return False
        if self.current():
            return True
        self.give_up("a later delivery trains the run, or it is final")
        return False

    def give_up(self, why: str) -> None:
        """Stop writing for good (said once in the log)."""
        with self._told:
            if self.lost.is_set():
                return
            self.lost.set()
        log.warning(
            "run %s: attempt %s stops and writes nothing more: %s", self.run_id, self.attempt, why
        )
