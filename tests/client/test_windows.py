"""curvelab.windows.BatchWindow: window means recovered from Keras's running
means, weighted by images, that add up to the epoch's mean."""

from __future__ import annotations

import math

import pytest

from curvelab.windows import BatchWindow

BATCH, IMAGES = 10, 35  # 4 steps: 10, 10, 10 and a last batch of 5
LOSSES = [4.0, 3.0, 2.0, 1.0]  # each batch's own mean loss
SIZES = [10, 10, 10, 5]


def running(steps: int) -> float:
    """Keras's running mean after ``steps`` steps: weighted by images."""
    return sum(loss * n for loss, n in zip(LOSSES[:steps], SIZES[:steps], strict=True)) / sum(
        SIZES[:steps]
    )


def test_each_point_is_the_mean_of_its_window_and_they_add_up() -> None:
    window = BatchWindow(BATCH, IMAGES)
    window.start_epoch(2)  # a third epoch: global steps go on from 8
    first = window.point(1, 4, {"loss": running(1), "note": "text"})
    assert first == (9, 2.25, {"loss": 4.0})  # not a number: left out
    second = window.point(3, 4, {"loss": running(3)})
    assert second is not None and second[2]["loss"] == pytest.approx(2.5)
    last = window.point(4, 4, {"loss": running(4)})
    assert last is not None and last[:2] == (12, 3.0)
    assert last[2]["loss"] == pytest.approx(1.0)  # the 5-image batch alone
    total = 4.0 * 10 + 2.5 * 20 + 1.0 * 5
    assert total / IMAGES == pytest.approx(running(4))


def test_no_new_images_no_point_and_a_new_epoch_starts_afresh() -> None:
    window = BatchWindow(BATCH, IMAGES)
    window.start_epoch(0)
    assert window.point(4, 4, {"loss": running(4)}) is not None
    assert window.point(4, 4, {"loss": running(4)}) is None  # the same moment again
    window.start_epoch(1)
    point = window.point(2, 4, {"loss": running(2)})
    assert point is not None and point[0] == 6 and point[2]["loss"] == pytest.approx(3.5)


def test_a_diverged_metric_is_none_and_unknown_sizes_count_full_batches() -> None:
    window = BatchWindow(BATCH, None)
    window.start_epoch(0)
    point = window.point(2, 10, {"loss": math.nan, "accuracy": 0.5})
    assert point is not None and point[2] == {"loss": None, "accuracy": 0.5}
    point = window.point(3, 10, {"accuracy": 0.6})  # 30 images: (18 - 10) / 10
    assert point is not None and point[2]["accuracy"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="at least 1"):
        BatchWindow(0, 10)
