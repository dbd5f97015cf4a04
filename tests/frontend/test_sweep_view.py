"""The sweep page's pure logic (frontend/sweep_view.py) and figures
(frontend/sweep_charts.py) over SweepPublic-shaped answers."""

from __future__ import annotations

import math
from typing import Any

from frontend import sweep_charts, sweep_view


def sweep_of(runs: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "id": "s1",
        "metric": "val_loss",
        "direction": "minimize",
        "max_runs": 6,
        "space": {
            "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True},
            "optimizer": ["adam", "sgd"],
            "batch_size": [32],
        },
        "counts": {"succeeded": 2, "running": 1, "queued": 0},
        "runs": runs,
        **fields,
    }


def run(i: int, value: float | None, **params: Any) -> dict[str, Any]:
    return {
        "id": f"run{i}xxxxxxx",
        "name": f"trial {i}",
        "status": "succeeded" if value is not None else "running",
        "params": {"batch_size": 32, **params},
        "value": value,
        "best_val_loss": value,
        "best_val_accuracy": None if value is None else 1 - value / 3,
        "epochs_done": 3 if value is not None else 0,
    }


RUNS = [
    run(1, 0.4, learning_rate=0.01, optimizer="adam"),
    run(2, 0.9, learning_rate=0.001, optimizer="sgd"),
    run(3, None, learning_rate=0.1, optimizer="adam"),
]


def test_only_the_knobs_that_vary() -> None:
    assert sweep_view.varying_knobs(sweep_of(RUNS)) == ["learning_rate", "optimizer"]
    # One run says nothing yet about what varies: every knob of the space.
    assert sweep_view.varying_knobs(sweep_of(RUNS[:1])) == [
        "learning_rate",
        "optimizer",
        "batch_size",
    ]
    # A "list" sweep's knobs are the fields its runs' params name.
    listed = sweep_of([run(1, 0.5, bn_momentum=0.9), run(2, 0.6, bn_momentum=0.99)], space={})
    assert sweep_view.varying_knobs(listed) == ["bn_momentum"]


def test_the_ranking_table() -> None:
    sweep = sweep_of(RUNS)
    rows = sweep_view.ranking_rows(sweep, ["learning_rate", "optimizer"])
    assert [r["rank"] for r in rows] == [1, 2, None]  # no value yet: no rank
    assert rows[0] == {
        "rank": 1,
        "run": "trial 1",
        "open": "run?id=run1xxxxxxx",
        "status": "succeeded",
        "best val_loss ↓": 0.4,
        "best val_acc": 1 - 0.4 / 3,
        "epochs": 3,
        "learning_rate": "0.01",
        "optimizer": "adam",
    }
    # What the ranking is about first, in view on a narrow screen.
    assert list(rows[0])[:5] == ["rank", "run", "learning_rate", "optimizer", "best val_loss ↓"]
    assert "batch_size" not in rows[0]
    by_accuracy = sweep_of(RUNS, metric="val_accuracy", direction="maximize")
    assert "best val_loss" in sweep_view.ranking_rows(by_accuracy, [])[0]
    assert sweep_view.metric_label(sweep_of([], metric="val_accuracy", direction="maximize")) == (
        "best val_accuracy ↑"
    )
    assert sweep_view.counts_text(sweep).startswith("3 of 6 runs · 2 ")


def test_parcoords_dimensions_log_and_categorical() -> None:
    dims = sweep_view.parcoords_dimensions(sweep_of(RUNS), ["learning_rate", "optimizer"])
    lr, optimizer, metric = dims
    # Only the runs with a value: a line needs every axis.
    assert lr["label"] == "learning_rate (log)"
    assert lr["values"] == [math.log10(0.01), math.log10(0.001)]
    assert lr["ticktext"] == ["0.001", "0.01"]
    assert optimizer == {
        "label": "optimizer",
        "values": [0, 1],
        "tickvals": [0, 1],
        "ticktext": ["adam", "sgd"],
    }
    assert metric == {"label": "best val_loss ↓", "values": [0.4, 0.9]}
    figure = sweep_charts.parcoords_figure(dims).to_plotly_json()
    trace = figure["data"][0]
    assert trace["type"] == "parcoords" and len(trace["dimensions"]) == 3
    assert list(trace["line"]["color"]) == [0.4, 0.9]


def test_the_metric_against_each_knob() -> None:
    sweep = sweep_of(RUNS)
    xs, ys, names = sweep_view.knob_points(sweep, "learning_rate")
    assert (xs, ys, names) == ([0.01, 0.001], [0.4, 0.9], ["trial 1", "trial 2"])
    assert sweep_view.is_log(sweep, "learning_rate") and not sweep_view.is_log(sweep, "optimizer")
    figure = sweep_charts.knob_figure("learning_rate", xs, ys, names, "val_loss", log_x=True)
    assert figure.layout.xaxis.type == "log"
    xs, _, _ = sweep_view.knob_points(sweep, "optimizer")
    assert xs == ["adam", "sgd"]
    figure = sweep_charts.knob_figure("optimizer", xs, ys, names, "val_loss")
    assert figure.layout.xaxis.type == "category"


def test_the_best_runs_curves() -> None:
    assert [r["name"] for r in sweep_view.top_runs(sweep_of(RUNS))] == ["trial 1", "trial 2"]
    epochs = [{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 0.4}]
    figure = sweep_charts.curves_figure([("trial 1", epochs), ("trial 2", epochs[:1])])
    assert [t.name for t in figure.data] == ["trial 1", "trial 2"]
    assert list(figure.data[0].y) == [1.0, 0.4]
