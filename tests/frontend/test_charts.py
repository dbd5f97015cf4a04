"""The chart builders: traces, styles and axes from metrics rows, no Streamlit."""

from __future__ import annotations

import math

import pytest

from frontend import charts, gap_chart

EPOCHS = [
    {"epoch": 1, "loss": 1.0, "val_loss": 2.0, "accuracy": 0.5, "val_accuracy": 0.3},
    {"epoch": 2, "loss": 0.5, "val_loss": None, "accuracy": 0.7, "val_accuracy": 0.6},
    {"epoch": 3, "loss": 0.25, "val_loss": 0.4, "accuracy": 0.9, "val_accuracy": 0.8},
]
BATCHES = [{"step": s, "epoch": s / 2, "loss": 1.5 - s / 10, "accuracy": 0.5} for s in range(1, 7)]


def traces(fig) -> dict:
    return {t.name: t for t in fig.data}


def test_loss_solid_and_val_loss_dashed_at_their_epochs() -> None:
    fig = charts.loss_figure(EPOCHS, show_batches=False)
    found = traces(fig)
    assert set(found) == {"loss", "val_loss"}
    assert list(found["loss"].x) == [1, 2, 3]
    assert found["loss"].line.dash == "solid" and found["val_loss"].line.dash == "dash"
    assert list(found["val_loss"].y) == [2.0, None, 0.4]  # NaN stays a gap
    assert fig.layout.height == charts.CHART_HEIGHT
    assert fig.layout.xaxis.title.text == "epoch"


def test_batch_points_are_faint_markers_at_fractional_epochs() -> None:
    fig = charts.loss_figure(EPOCHS, BATCHES, smoothing=0.5)
    found = traces(fig)
    points = found["batch loss"]
    assert points.mode == "markers" and points.marker.opacity < 0.5
    assert list(points.x) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    smoothed = found["batch loss, smoothed 0.50"]
    assert list(smoothed.y) == pytest.approx(charts.ema(list(points.y), 0.5))


def test_no_smoothing_draws_no_smoothed_line_and_log_y() -> None:
    fig = charts.loss_figure(EPOCHS, BATCHES, smoothing=0.0, log_y=True)
    assert set(traces(fig)) == {"batch loss", "loss", "val_loss"}
    assert fig.layout.yaxis.type == "log"


def test_ema_is_debiased_and_keeps_gaps() -> None:
    assert charts.ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])
    smoothed = charts.ema([1.0, None, math.nan, 3.0], 0.5)
    assert smoothed[0] == pytest.approx(1.0)
    assert smoothed[1] is None and smoothed[2] is None
    assert smoothed[3] == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)
    with pytest.raises(ValueError):
        charts.ema([1.0], 1.0)


def test_accuracy_pair_on_a_unit_axis() -> None:
    fig = charts.accuracy_figure(EPOCHS)
    assert [t.name for t in fig.data] == ["accuracy", "val_accuracy"]
    assert tuple(fig.layout.yaxis.range) == (0, 1.02)


def test_an_empty_run_says_it_waits() -> None:
    fig = charts.loss_figure([], [])
    assert fig.layout.annotations[0].text == "waiting for the first epoch"


def test_compare_one_colour_per_run_validation_dashed() -> None:
    fig = charts.compare_figure([("a", EPOCHS), ("b", EPOCHS[:2])], "loss")
    found = traces(fig)
    assert set(found) == {"a", "a (validation)", "b", "b (validation)"}
    assert found["a"].line.color == found["a (validation)"].line.color
    assert found["a"].line.color != found["b"].line.color
    assert found["b (validation)"].line.dash == "dash" and found["b"].line.dash == "solid"
    # One legend entry per run; it toggles both of the run's curves.
    assert [t.name for t in fig.data if t.showlegend] == ["a", "b"]
    assert found["a (validation)"].legendgroup == "a"


DECOMPOSITION = [
    {"epoch": 1, "gap": 2.2, "train_mode": 0.1, "bn_lag": 2.3, "generalisation": -0.2},
    {"epoch": 2, "gap": 0.5, "train_mode": None, "bn_lag": 0.4, "generalisation": None},
    {"epoch": 3, "gap": 0.3, "train_mode": -0.05, "bn_lag": 0.1, "generalisation": 0.25},
]


def test_gap_parts_stack_relative_with_the_gap_on_top() -> None:
    fig = gap_chart.gap_figure(DECOMPOSITION)
    found = traces(fig)
    assert [t.name for t in fig.data] == [
        "train-mode effect",
        "BatchNorm lag",
        "generalisation",
        "gap",
    ]
    assert fig.layout.barmode == "relative"  # negative parts stack below zero
    assert list(found["BatchNorm lag"].x) == [1, 3]  # epoch 2 lacks parts: skipped
    assert list(found["generalisation"].y) == [-0.2, 0.25]
    assert list(found["train-mode effect"].y) == [0.1, -0.05]
    assert found["gap"].mode == "lines+markers" and list(found["gap"].y) == [2.2, 0.3]
    assert "val_loss − loss" in found["gap"].hovertemplate
    assert fig.layout.yaxis.title.text and fig.layout.xaxis.title.text == "epoch"


def test_gap_rows_need_every_part() -> None:
    assert [r["epoch"] for r in gap_chart.gap_rows(DECOMPOSITION)] == [1, 3]
    assert gap_chart.gap_rows([{"epoch": 1, "gap": 0.4, "train_mode": None}]) == []


def test_centred_loss_moves_only_the_loss_half_an_epoch_back() -> None:
    fig = charts.loss_figure(EPOCHS, BATCHES, centre_loss=True)
    found = traces(fig)
    assert list(found["loss (at epoch − 0.5)"].x) == [0.5, 1.5, 2.5]
    assert list(found["val_loss"].x) == [1, 2, 3]
    assert list(found["batch loss"].x) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
