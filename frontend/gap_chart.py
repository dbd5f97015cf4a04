"""The gap-decomposition chart: each epoch's ``val_loss − loss`` as stacked
parts (train-mode effect, BatchNorm lag, generalisation), as the diagnosis
API splits it."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from frontend.charts import CHART_HEIGHT, Row, apply_layout, is_finite, number_or_none

# The gap's parts as the diagnosis names them: (field, legend, colour, hover line).
GAP_PARTS = (
    ("train_mode", "train-mode effect", "#9467bd", "dropout, in-epoch running mean"),
    ("bn_lag", "BatchNorm lag", "#d62728", "moving averages behind the weights"),
    ("generalisation", "generalisation", "#2ca02c", "validation vs training, measured alike"),
)
GAP_COLOR = "#444444"


def gap_rows(decomposition: Sequence[Row]) -> list[Row]:
    """The epochs whose gap has all its parts (gap probes on, no NaN)."""
    return [
        row
        for row in decomposition
        if "epoch" in row and all(is_finite(row.get(key)) for key, *_ in GAP_PARTS)
    ]


def gap_figure(decomposition: Sequence[Row], *, height: int = CHART_HEIGHT) -> go.Figure:
    """The gap ``val_loss − loss`` of each epoch as stacked parts (negative
    parts stack below zero), with the whole gap as markers on top."""
    rows = gap_rows(decomposition)
    xs = [float(row["epoch"]) for row in rows]
    fig = go.Figure()
    for key, name, color, meaning in GAP_PARTS:
        fig.add_bar(
            x=xs,
            y=[float(row[key]) for row in rows],
            name=name,
            marker={"color": color},
            # Unified hover drops the <extra> part, where plotly puts the name.
            hovertemplate=f"{name} %{{y:.3f}}: {meaning}<extra></extra>",
        )
    fig.add_scatter(
        x=xs,
        y=[number_or_none(row.get("gap")) for row in rows],
        mode="lines+markers",
        name="gap",
        line={"color": GAP_COLOR, "width": 2},
        marker={"size": 7, "symbol": "diamond"},
        hovertemplate="gap %{y:.3f}: val_loss − loss<extra></extra>",
    )
    apply_layout(fig, "The gap val_loss − loss, in parts", max(xs, default=0.0), height)
    fig.update_layout(barmode="relative", bargap=0.35)
    fig.update_yaxes(title={"text": "loss difference"}, zeroline=True)
    return fig
