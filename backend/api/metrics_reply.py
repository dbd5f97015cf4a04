"""The body of ``GET /api/runs/{id}/metrics``, its ETag, and a cache of bodies.

A run page polls its run's metrics every two seconds, often from several
viewers at once. ``Run.metrics_version`` moves with every change to the
run's metric rows (``backend.runs`` is the one place that writes them), so
the run's row alone names the version: with the downsampling bound, the
ETag, and the key of the cached body. A poll of an unchanged run reads that
one row and answers 304, or the bytes from the cache; only a new version
reads the rows and encodes them.

No memory here grows with a run's length: the epochs are bounded by
``TrainConfig.epochs``; the batch points are read in chunks of ``CHUNK_ROWS``
by step (``batch_chunks``) and downsampled as they stream
(``backend.downsample``); the cache is bounded in bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

from cachetools import LRUCache
from pydantic_core import from_json, to_json
from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from backend.db import BatchMetrics, EpochMetrics, Run
from backend.downsample import DEFAULT_MAX_POINTS, BucketPicker, Row

# Part of every ETag: change it when ``encode`` writes other bytes for the
# same rows, or clients keep the old bytes through their 304s.
BODY_FORMAT = "metrics-2"
CHUNK_ROWS = 10_000


def etag(run: Run, max_points: int = DEFAULT_MAX_POINTS) -> str:
    # Versions only go up, but an external run's id is its client's: deleted,
    # then sent again, it starts over at version 0. Its creation time tells
    # the two apart, for this cache and for a client's If-None-Match alike.
    made = int(run.created_at.timestamp() * 1_000_000) if run.created_at else 0
    return f'"{BODY_FORMAT}.{run.id}.{made}.{run.metrics_version}.{max_points}"'


def epoch_rows(session: Session, run_id: str) -> list[dict[str, Any]]:
    """Every epoch (at most TrainConfig's 1000), each row's values after its number."""
    rows = session.execute(
        select(EpochMetrics.epoch, cast(EpochMetrics.values, Text))
        .where(EpochMetrics.run_id == run_id)
        .order_by(EpochMetrics.epoch)
    ).all()
    values = _parse_all(text for _, text in rows)
    return [{"epoch": epoch, **vals} for (epoch, _), vals in zip(rows, values, strict=True)]


def batch_span(session: Session, run_id: str) -> tuple[int, int, int]:
    """(number of batch points, first step, last step); steps 0 when none."""
    count, first, last = session.execute(
        select(func.count(), func.min(BatchMetrics.step), func.max(BatchMetrics.step)).where(
            BatchMetrics.run_id == run_id
        )
    ).one()
    return int(count), int(first or 0), int(last or 0)


def batch_chunk(
    session: Session, run_id: str, after: int | None, until: int | None, limit: int = CHUNK_ROWS
) -> list[Row]:
    """Up to ``limit`` batch points with ``after`` < step <= ``until``, by step.

    One short query on the primary key (run_id, step) per chunk: portable,
    and no cursor stays open between chunks (a slow CSV download holds no
    transaction). The JSON column is read as text and parsed in one call."""
    query = select(BatchMetrics.step, BatchMetrics.epoch, cast(BatchMetrics.values, Text)).where(
        BatchMetrics.run_id == run_id
    )
    if after is not None:
        query = query.where(BatchMetrics.step > after)
    if until is not None:
        query = query.where(BatchMetrics.step <= until)
    # Core rows, not ORM ones: a tenth of the cost per row.
    rows = session.connection().execute(query.order_by(BatchMetrics.step).limit(limit)).all()
    values = _parse_all(text for _, _, text in rows)
    return [(step, at, vals) for (step, at, _), vals in zip(rows, values, strict=True)]


def batch_chunks(
    session: Session, run_id: str, until: int | None = None, chunk: int = CHUNK_ROWS
) -> Iterator[list[Row]]:
    """The run's batch points (up to step ``until``) in step order, a chunk at a time."""
    after: int | None = None
    while rows := batch_chunk(session, run_id, after, until, chunk):
        yield rows
        if len(rows) < chunk:
            return
        after = rows[-1][0]


def encode(
    session: Session, run_id: str, max_points: int = DEFAULT_MAX_POINTS, chunk: int = CHUNK_ROWS
) -> bytes:
    """The ``Metrics`` JSON: every epoch, at most ``max_points`` batch points
    (``backend.downsample``), their total and whether some were left out; NaN
    and infinity as null. Batch points are read ``chunk`` at a time: the
    memory it takes is about two chunks (the one read, the one before)."""
    epochs = epoch_rows(session, run_id)
    total, first, last = batch_span(session, run_id)
    picker = BucketPicker(first, last, total, max_points)
    # Steps past ``last`` came after the count: the next version shows them.
    for rows in batch_chunks(session, run_id, until=last, chunk=chunk):
        picker.add(rows)
    reply = {
        "epochs": epochs,
        "batches": picker.points(),
        "batches_total": total,
        "downsampled": picker.downsampled,
    }
    return to_json(reply, inf_nan_mode="null")


class BodyCache:
    """The latest bodies of the runs read most recently, at most ``max_bytes``
    of them, keyed by run and downsampling bound.

    Thread-safe: FastAPI runs sync routes in a thread pool. Two threads that
    miss the same body at once both encode it; the result is the same."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_bytes = max_bytes
        self._bodies: LRUCache[tuple[str, int], tuple[str, bytes]] = LRUCache(
            maxsize=max_bytes, getsizeof=_entry_size
        )
        self._lock = threading.Lock()

    def body(self, session: Session, run: Run, max_points: int = DEFAULT_MAX_POINTS) -> bytes:
        """The run's body at its version: from the cache, or encoded and kept.
        ``run`` was read in ``session``'s transaction; the rows may be newer,
        never older, which the next version's poll replaces."""
        tag, key = etag(run, max_points), (run.id, max_points)
        with self._lock:
            cached = self._bodies.get(key)
            if cached is not None and cached[0] == tag:
                return cached[1]
        body = encode(session, run.id, max_points)
        entry = (tag, body)
        with self._lock:
            if _entry_size(entry) <= self.max_bytes:  # else LRUCache refuses it
                self._bodies[key] = entry
            else:
                self._bodies.pop(key, None)
        return body

    @property
    def size(self) -> int:
        """Bytes held now."""
        with self._lock:
            return int(self._bodies.currsize)

    def keys(self) -> set[tuple[str, int]]:
        with self._lock:
            return set(self._bodies.keys())

    def __len__(self) -> int:
        with self._lock:
            return len(self._bodies)


def etag_matches(if_none_match: str | None, tag: str) -> bool:
    """``If-None-Match`` names ``tag`` (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    tags = {candidate.strip().removeprefix("W/") for candidate in if_none_match.split(",")}
    return "*" in tags or tag in tags


def _entry_size(entry: tuple[str, bytes]) -> int:
    tag, body = entry
    return len(body) + len(tag)


def _parse_all(texts: Iterable[str]) -> list[Any]:
    # One JSON array: one call into the parser rather than one per row.
    values: list[Any] = from_json("[" + ",".join(texts) + "]")
    return values
