"""The body of ``GET /api/runs/{id}/metrics``, its ETag, and a small cache of bodies.

A run page polls its run's metrics every two seconds, often from several
viewers at once. Each poll reads the run's rows as stored (the JSON column
as text, never decoded) and digests them: that digest is the ETag. So the
ETag changes whenever a row is added, removed or rewritten, a resumed run
that re-records an epoch with other values included, and the body built
from those same rows is the one the ETag names. The tables key rows by
(run, epoch) and (run, step) and have no change counter, so nothing
cheaper than the rows themselves could tell a rewritten epoch apart.

Decoding the rows and encoding the body is the expensive part; it happens
once per run and version, then the bytes come from ``BODIES``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic_core import from_json, to_json
from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from backend.db import BatchMetrics, EpochMetrics

CACHED_RUNS = 64
# Part of every ETag: change it when ``body`` writes other bytes for the same
# rows, or clients keep the old bytes through their 304s.
BODY_FORMAT = b"metrics/1"


@dataclass(frozen=True)
class StoredMetrics:
    """A run's metric rows as the database holds them."""

    epochs: list[tuple[int, str]]  # (epoch, values as JSON text)
    batches: list[tuple[int, float, str]]  # (step, fractional epoch, values as JSON text)

    @cached_property
    def etag(self) -> str:
        digest = hashlib.blake2b(BODY_FORMAT, digest_size=16)
        digest.update(b"\x1d")
        digest.update("\x1e".join(f"{epoch}\x1f{text}" for epoch, text in self.epochs).encode())
        digest.update(b"\x1d")
        digest.update(
            "\x1e".join(f"{step}\x1f{at!r}\x1f{text}" for step, at, text in self.batches).encode()
        )
        return f'"{digest.hexdigest()}"'

    def body(self) -> bytes:
        """The ``Metrics`` JSON, each row's values after its key columns: the
        bytes pydantic wrote for the route's model, NaN and infinity as null."""
        epoch_values = _parse_all(text for _, text in self.epochs)
        batch_values = _parse_all(text for _, _, text in self.batches)
        reply = {
            "epochs": [
                {"epoch": epoch, **values}
                for (epoch, _), values in zip(self.epochs, epoch_values, strict=True)
            ],
            "batches": [
                {"step": step, "epoch": at, **values}
                for (step, at, _), values in zip(self.batches, batch_values, strict=True)
            ],
        }
        return to_json(reply, inf_nan_mode="null")


def stored_metrics(session: Session, run_id: str) -> StoredMetrics:
    """Columns only, the values as text: no entities, no JSON decoding."""
    epochs = session.execute(
        select(EpochMetrics.epoch, cast(EpochMetrics.values, Text))
        .where(EpochMetrics.run_id == run_id)
        .order_by(EpochMetrics.epoch)
    ).tuples()
    batches = session.execute(
        select(BatchMetrics.step, BatchMetrics.epoch, cast(BatchMetrics.values, Text))
        .where(BatchMetrics.run_id == run_id)
        .order_by(BatchMetrics.step)
    ).tuples()
    return StoredMetrics(epochs=list(epochs), batches=list(batches))


class BodyCache:
    """The latest body of each of the ``max_runs`` runs read most recently.

    Thread-safe: FastAPI runs sync routes in a thread pool. Two threads that
    miss the same run at once both build the body; the result is the same."""

    def __init__(self, max_runs: int = CACHED_RUNS) -> None:
        if max_runs < 1:
            raise ValueError("max_runs must be at least 1")
        self.max_runs = max_runs
        self._bodies: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def body(self, run_id: str, stored: StoredMetrics) -> bytes:
        etag = stored.etag
        with self._lock:
            cached = self._bodies.get(run_id)
            if cached is not None and cached[0] == etag:
                self._bodies.move_to_end(run_id)
                return cached[1]
        body = stored.body()
        with self._lock:
            self._bodies[run_id] = (etag, body)
            self._bodies.move_to_end(run_id)
            while len(self._bodies) > self.max_runs:
                self._bodies.popitem(last=False)
        return body

    def __len__(self) -> int:
        with self._lock:
            return len(self._bodies)


BODIES = BodyCache()
"""The process's cache; keyed by run and ETag, so it is never stale."""


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _parse_all(texts: Iterable[str]) -> list[Any]:
    # One JSON array: one call into the parser rather than one per row.
    values: list[Any] = from_json("[" + ",".join(texts) + "]")
    return values
