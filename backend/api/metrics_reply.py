"""The body of ``GET /api/runs/{id}/metrics``, its ETag, and a small cache of bodies.

A run page polls its run's metrics every two seconds, often from several
viewers at once. ``Run.metrics_version`` moves with every change to the
run's metric rows (``backend.runs`` is the one place that writes them), so
the run's row alone names the version: the ETag, and the key of the cached
body. A poll of an unchanged run reads that one row and answers 304, or the
bytes from ``BODIES``; only a new version reads the rows (the JSON column as
text, parsed in one call) and encodes them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from pydantic_core import from_json, to_json
from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from backend.db import BatchMetrics, EpochMetrics, Run

CACHED_RUNS = 64
# Part of every ETag: change it when ``encode`` writes other bytes for the
# same rows, or clients keep the old bytes through their 304s.
BODY_FORMAT = "metrics-1"


def etag(run: Run) -> str:
    # Run ids are unique for good (uuid4), versions only go up.
    return f'"{BODY_FORMAT}.{run.id}.{run.metrics_version}"'


def encode(session: Session, run_id: str) -> bytes:
    """The ``Metrics`` JSON, each row's values after its key columns: the
    bytes pydantic wrote for the route's model, NaN and infinity as null."""
    epochs = session.execute(
        select(EpochMetrics.epoch, cast(EpochMetrics.values, Text))
        .where(EpochMetrics.run_id == run_id)
        .order_by(EpochMetrics.epoch)
    ).all()
    batches = session.execute(
        select(BatchMetrics.step, BatchMetrics.epoch, cast(BatchMetrics.values, Text))
        .where(BatchMetrics.run_id == run_id)
        .order_by(BatchMetrics.step)
    ).all()
    epoch_values = _parse_all(text for _, text in epochs)
    batch_values = _parse_all(text for _, _, text in batches)
    reply = {
        "epochs": [
            {"epoch": epoch, **values}
            for (epoch, _), values in zip(epochs, epoch_values, strict=True)
        ],
        "batches": [
            {"step": step, "epoch": at, **values}
            for (step, at, _), values in zip(batches, batch_values, strict=True)
        ],
    }
    return to_json(reply, inf_nan_mode="null")


class BodyCache:
    """The latest body of each of the ``max_runs`` runs read most recently.

    Thread-safe: FastAPI runs sync routes in a thread pool. Two threads that
    miss the same run at once both encode it; the result is the same."""

    def __init__(self, max_runs: int = CACHED_RUNS) -> None:
        if max_runs < 1:
            raise ValueError("max_runs must be at least 1")
        self.max_runs = max_runs
        self._bodies: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def body(self, session: Session, run: Run) -> bytes:
        """The run's body at its version: from the cache, or encoded and kept.
        ``run`` was read in ``session``'s transaction: on SQLite the rows are
        read in the same snapshot; elsewhere they may be newer, never older,
        which the next version's poll replaces."""
        tag = etag(run)
        with self._lock:
            cached = self._bodies.get(run.id)
            if cached is not None and cached[0] == tag:
                self._bodies.move_to_end(run.id)
                return cached[1]
        body = encode(session, run.id)
        with self._lock:
            self._bodies[run.id] = (tag, body)
            self._bodies.move_to_end(run.id)
            while len(self._bodies) > self.max_runs:
                self._bodies.popitem(last=False)
        return body

    def __len__(self) -> int:
        with self._lock:
            return len(self._bodies)


BODIES = BodyCache()
"""The process's cache; keyed by run and version, so it is never stale."""


def etag_matches(if_none_match: str | None, tag: str) -> bool:
    """``If-None-Match`` names ``tag`` (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    tags = {candidate.strip().removeprefix("W/") for candidate in if_none_match.split(",")}
    return "*" in tags or tag in tags


def _parse_all(texts: Iterable[str]) -> list[Any]:
    # One JSON array: one call into the parser rather than one per row.
    values: list[Any] = from_json("[" + ",".join(texts) + "]")
    return values
