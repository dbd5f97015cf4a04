"""Batch points as window means: the loss at that moment of training.

Keras's batch-level ``loss`` (and every metric) is a running mean since the
epoch began, weighted by images. A point every N steps records instead the
mean over the steps since the previous point of the same epoch, recovered
from two running means: ``(mean_now · seen_now − mean_before · seen_before) /
(seen_now − seen_before)``. Weighted by images, as Keras weighs them, so the
last (smaller) batch of an epoch counts for what it holds, and the points of
an epoch, weighted by their windows' images, add up to its ``loss``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

BatchPoint = tuple[int, float, dict[str, float | None]]  # step (1-based), epoch, means


class BatchWindow:
    """The window means of one fit. ``train_images``: images per epoch (None:
    unknown, every step then counts a full batch)."""

    def __init__(self, batch_size: int, train_images: int | None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.train_images = train_images
        self._epoch = 0
        self._seen = 0  # images of this epoch at the previous point
        self._sums: dict[str, float] = {}  # running mean × images, at the previous point

    def start_epoch(self, epoch0: int) -> None:
        """A new epoch (0-based, as Keras counts): windows start again."""
        self._epoch = epoch0
        self._seen = 0
        self._sums = {}

    def point(
        self, steps_done: int, steps_per_epoch: int, running: Mapping[str, Any]
    ) -> BatchPoint | None:
        """The point after ``steps_done`` steps of the epoch, from Keras's
        running means: (global step, fractional epoch, window means); None
        when no image was seen since the previous point."""
        seen = steps_done * self.batch_size
        if self.train_images is not None:
            seen = min(seen, self.train_images)
        if seen <= self._seen:
            return None
        sums: dict[str, float] = {}
        values: dict[str, float | None] = {}
        for key, mean in running.items():
            number = _float(mean)
            if number is None:
                continue  # not a number: nothing to plot
            sums[key] = number * seen
            before = self._sums.get(key, 0.0)
            window = (sums[key] - before) / (seen - self._seen)
            # Two float32 running means differ by their rounding at least: a
            # window below it is zero (an accuracy of -1e-8 is noise, not a number).
            if abs(window) <= 2.0**-23 * max(abs(sums[key]), abs(before)) / (seen - self._seen):
                window = 0.0
            # Keras's means are float32: digits past the 7th are noise.
            values[key] = _finite(float(f"{window:.7g}"))
        self._seen, self._sums = seen, sums
        step = self._epoch * steps_per_epoch + steps_done
        return step, self._epoch + steps_done / steps_per_epoch, values


def _float(value: Any) -> float | None:
    """A float (NaN for a diverged metric, which makes its windows NaN too),
    or None for what is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _finite(number: float) -> float | None:
    # JSON has no NaN or infinity: a diverged loss is stored as null.
    return number if math.isfinite(number) else None
