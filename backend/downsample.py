"""Batch points for a curve: all of them up to a bound, then min/max per bucket.

A run that records a batch point every step has millions of them; a chart is
a thousand pixels wide. ``GET /api/runs/{id}/metrics`` answers at most
``max_points`` of them, chosen like this (min/max per bucket, the "min-max"
decimation of plotting libraries; M4 of Jugel et al., VLDB 2014, adds the
first and last point of each bucket, for lines):

- up to ``max_points`` points recorded: every one;
- more: the steps from the run's first to its last point are cut into
  ``(max_points - 2) // 2`` buckets of equal width; of each bucket the points
  of lowest and of highest ``loss`` are kept (once when they are one point;
  the bucket's first point when none of its losses is a finite number, so a
  diverged stretch still shows), and so are the run's very first and very
  last points.

Every point kept is a recorded row, unchanged (``{"step", "epoch", "loss",
...}``), in step order: the floor and the spikes of the batch loss survive at
the scale of the whole run; only the density inside a bucket is lost. The
rows stream through ``BucketPicker`` in step order, which keeps the picks so
far and the current bucket's two candidates: memory is bounded by
``max_points``, whatever the run's length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DEFAULT_MAX_POINTS = 2000
MAX_POINTS_LIMIT = 20_000
MIN_POINTS = 10
KEY = "loss"

# (step, epoch, values) as stored.
Row = tuple[int, float, dict[str, Any]]


def point(row: Row) -> dict[str, Any]:
    """The row as the API writes a batch point."""
    step, epoch, values = row
    return {"step": step, "epoch": epoch, **values}


class BucketPicker:
    """Feed rows in step order with ``add``; ``points()`` is the curve.

    ``first_step``/``last_step``/``total`` describe the run's rows when the
    reading began; rows past ``last_step`` are the caller's to leave out."""

    def __init__(self, first_step: int, last_step: int, total: int, max_points: int) -> None:
        if max_points < MIN_POINTS:
            raise ValueError(f"max_points must be at least {MIN_POINTS}")
        self.max_points = max_points
        self.downsampled = total > max_points
        self.first_step = first_step
        self.buckets = (max_points - 2) // 2
        self.span = max(last_step - first_step + 1, 1)
        self._picked: list[Row] = []
        self._bucket = -1
        self._low: Row | None = None  # the current bucket's lowest finite loss
        self._high: Row | None = None  # and highest
        self._low_loss = self._high_loss = 0.0
        self._first: Row | None = None  # and first row, for a bucket without any
        self._last: Row | None = None

    def add(self, rows: Sequence[Row]) -> None:
        """Feed the next rows, in step order (a chunk at a time: this loop
        runs once per recorded point, so it keeps its state in locals)."""
        if not rows:
            return
        if not self.downsampled:
            self._picked.extend(rows[: max(self.max_points - len(self._picked), 0)])
            return
        if self._last is None:
            self._picked.append(rows[0])  # the run's first point
        self._last = rows[-1]
        first, buckets, span, top = self.first_step, self.buckets, self.span, self.buckets - 1
        bucket, low, high = self._bucket, self._low, self._high
        low_loss, high_loss = self._low_loss, self._high_loss
        for row in rows:
            index = (row[0] - first) * buckets // span
            if index > top:
                index = top
            if index != bucket:
                self._low, self._high = low, high
                self._flush()
                bucket, self._first, low, high = index, row, None, None
            loss: Any = row[2].get(KEY)
            kind = type(loss)  # not isinstance: a bool is no loss
            if (kind is float or kind is int) and math.isfinite(loss):
                if low is None or loss < low_loss:
                    low, low_loss = row, loss
                if high is None or loss > high_loss:
                    high, high_loss = row, loss
        self._bucket, self._low, self._high = bucket, low, high
        self._low_loss, self._high_loss = low_loss, high_loss

    def points(self) -> list[dict[str, Any]]:
        """The picks, in step order (call once, after the last ``add``)."""
        if self.downsampled:
            self._flush()
            if self._last is not None:
                self._keep(self._last)
        return [point(row) for row in self._picked]

    def _flush(self) -> None:
        picks = [row for row in (self._low, self._high) if row is not None] or [
            row for row in (self._first,) if row is not None
        ]
        for row in sorted(picks, key=lambda row: row[0]):
            self._keep(row)
        self._low = self._high = self._first = None

    def _keep(self, row: Row) -> None:
        if not self._picked or row[0] > self._picked[-1][0]:
            self._picked.append(row)
