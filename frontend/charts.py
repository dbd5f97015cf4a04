"""Plotly figures of a run's curves: plain functions over the API's metrics
rows, so tests check the traces without Streamlit.

x is always in epochs: the epoch rows sit at their (1-based) epoch number,
where Keras reports them, and batch points at their fractional epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

Row = dict[str, Any]

# Tall enough to read, short enough that both charts sit beside the config
# column in a 1400×900 window.
CHART_HEIGHT = 330
TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
# One colour per run in the compare view; validation is told apart by dash.
RUN_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    # Compare takes 20 runs: lighter and darker kin of the ten above.
    "#aec7e8",
    "#ff9896",
    "#98df8a",
    "#c5b0d5",
    "#ffbb78",
    "#9edae5",
    "#c49c94",
    "#f7b6d2",
    "#393b79",
    "#637939",
)


def ema(values: Sequence[float | None], weight: float) -> list[float | None]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the
    first points are not dragged towards zero; gaps (None, NaN) stay gaps."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    smoothed: list[float | None] = []
    last, count = 0.0, 0
    for value in values:
        if not is_finite(value):
            smoothed.append(None)
            continue
        assert value is not None
        count += 1
        last = last * weight + (1 - weight) * value
        smoothed.append(last / (1 - weight**count))
    return smoothed


def loss_figure(
    epochs: Sequence[Row],
    batches: Sequence[Row] = (),
    *,
    show_batches: bool = True,
    smoothing: float = 0.0,
    log_y: bool = False,
    centre_loss: bool = False,
    height: int = CHART_HEIGHT,
) -> go.Figure:
    """loss (solid) and val_loss (dashed) per epoch; the batch loss as faint
    points, and its moving average when ``smoothing`` > 0.

    ``centre_loss``: ``loss`` at epoch − 0.5, where its running mean over the
    epoch is centred, so the half-epoch it lags behind val_loss shows."""
    fig = go.Figure()
    if show_batches and batches:
        xs, ys = _series(batches, "loss")
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="markers",
            name="batch loss",
            marker={"color": TRAIN_COLOR, "size": 4, "opacity": 0.25},
        )
        if smoothing > 0:
            fig.add_scatter(
                x=xs,
                y=ema(ys, smoothing),
                mode="lines",
                name=f"batch loss, smoothed {smoothing:.2f}",
                line={"color": TRAIN_COLOR, "width": 1, "dash": "dot"},
                connectgaps=True,
            )
    _add_epoch_pair(fig, epochs, "loss", "val_loss", train_shift=-0.5 if centre_loss else 0.0)
    apply_layout(fig, "Loss", _last_epoch(epochs, batches), height)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def accuracy_figure(epochs: Sequence[Row], *, height: int = CHART_HEIGHT) -> go.Figure:
    """accuracy (solid) and val_accuracy (dashed) per epoch, on a 0–1 axis."""
    fig = go.Figure()
    _add_epoch_pair(fig, epochs, "accuracy", "val_accuracy")
    apply_layout(fig, "Accuracy", _last_epoch(epochs, ()), height)
    fig.update_yaxes(range=[0, 1.02])
    return fig


def compare_figure(
    runs: Sequence[tuple[str, Sequence[Row]]],
    metric: str,
    *,
    log_y: bool = False,
    height: int = CHART_HEIGHT,
) -> go.Figure:
    """Several runs' ``metric`` (solid) and ``val_<metric>`` (dashed), one colour
    per run; one legend entry per run toggles both of its curves."""
    fig = go.Figure()
    last = 0.0
    for i, (label, epochs) in enumerate(runs):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        for key, dash, shown in ((metric, "solid", True), (f"val_{metric}", "dash", False)):
            xs, ys = _series(epochs, key)
            fig.add_scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=label if shown else f"{label} (validation)",
                legendgroup=label,
                showlegend=shown,
                line={"color": color, "dash": dash},
                marker={"size": 5},
            )
        last = max(last, _last_epoch(epochs, ()))
    apply_layout(fig, metric.replace("_", " ").capitalize(), last, height)
    # Below the plot: run names are long, and several would cover the title.
    fig.update_layout(legend={"yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0})
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02])
    elif log_y:
        fig.update_yaxes(type="log")
    return fig


def _add_epoch_pair(
    fig: go.Figure, epochs: Sequence[Row], train: str, val: str, train_shift: float = 0.0
) -> None:
    for key, color, dash in ((train, TRAIN_COLOR, "solid"), (val, VAL_COLOR, "dash")):
        xs, ys = _series(epochs, key)
        shift = train_shift if key == train else 0.0
        fig.add_scatter(
            x=[x + shift for x in xs],
            y=ys,
            mode="lines+markers",
            name=f"{key} (at epoch − {-shift:g})" if shift else key,
            line={"color": color, "dash": dash, "width": 2},
            marker={"size": 6},
        )


def apply_layout(fig: go.Figure, title: str, last_epoch: float, height: int) -> None:
    fig.update_layout(
        title={"text": title, "font": {"size": 15}},
        height=height,
        # Room above the legend for plotly's toolbar, which appears on hover.
        margin={"l": 10, "r": 10, "t": 56, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
        hovermode="x unified",
    )
    # Whole-epoch ticks for short runs; plotly's own spacing for long ones.
    dtick = max(1, math.ceil(last_epoch / 10))
    fig.update_xaxes(title={"text": "epoch"}, rangemode="tozero", tick0=0, dtick=dtick)
    if last_epoch == 0:
        fig.add_annotation(
            text="waiting for the first epoch",
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
        )


def _series(rows: Sequence[Row], key: str) -> tuple[list[float], list[float | None]]:
    xs = [float(row["epoch"]) for row in rows if "epoch" in row]
    ys = [number_or_none(row.get(key)) for row in rows if "epoch" in row]
    return xs, ys


def _last_epoch(epochs: Sequence[Row], batches: Sequence[Row]) -> float:
    points = [float(row["epoch"]) for row in (*epochs, *batches) if "epoch" in row]
    return max(points, default=0.0)


def number_or_none(value: Any) -> float | None:
    return float(value) if is_finite(value) else None


def is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
