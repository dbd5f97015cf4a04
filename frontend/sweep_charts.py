"""Plotly figures of a sweep: parallel coordinates of its knobs and metric,
the best runs' val_loss curves overlaid, the metric against one knob. Plain
functions over sweep_view's data, so tests read the traces without Streamlit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from frontend.charts import RUN_COLORS, apply_layout, number_or_none

Row = dict[str, Any]
SMALL = 260


def parcoords_figure(dimensions: Sequence[Row], maximize: bool = False) -> go.Figure:
    """One line per run across its knobs' axes; coloured by the metric (the
    last dimension), the best runs darkest."""
    metric = dimensions[-1]["values"] if dimensions else []
    line: Row = {"color": metric, "colorscale": "Viridis", "showscale": True}
    # Viridis is dark at its low end: the best runs dark for either direction.
    line["reversescale"] = maximize
    figure = go.Figure(go.Parcoords(line=line, dimensions=[_padded(d) for d in dimensions]))
    figure.update_layout(height=360, margin={"l": 60, "r": 60, "t": 50, "b": 20})
    return figure


def _padded(dimension: Row) -> Row:
    """An axis a little wider than its values: at exactly min..max, the best
    and worst runs' lines lie on the box's edges, out of sight; and its
    ticks in three significant digits, not the values' own."""
    values = [v for v in dimension.get("values") or [] if v is not None]
    if not values:
        return dict(dimension)
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.08 or 0.5
    padded = {**dimension, "range": [low - pad, high + pad]}
    if "tickvals" not in dimension:
        padded["tickformat"] = ".3~g"
    return padded


def curves_figure(series: Sequence[tuple[str, Sequence[Row]]]) -> go.Figure:
    """val_loss per epoch of each run, one colour each, best first."""
    figure = go.Figure()
    last = 0.0
    for i, (label, epochs) in enumerate(series):
        rows = [r for r in epochs if "epoch" in r]
        figure.add_scatter(
            x=[float(r["epoch"]) for r in rows],
            y=[number_or_none(r.get("val_loss")) for r in rows],
            mode="lines+markers",
            name=label,
            line={"color": RUN_COLORS[i % len(RUN_COLORS)]},
            marker={"size": 5},
        )
        last = max([last, *(float(r["epoch"]) for r in rows)])
    apply_layout(figure, "val_loss of the best runs", last, 330)
    figure.update_layout(legend={"yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0})
    return figure


def knob_figure(
    knob: str,
    xs: Sequence[Any],
    ys: Sequence[float],
    names: Sequence[str],
    metric: str,
    log_x: bool = False,
) -> go.Figure:
    """The metric of each run against one knob's value (log x for a log range)."""
    figure = go.Figure(
        go.Scatter(
            x=list(xs),
            y=list(ys),
            mode="markers",
            text=list(names),
            hovertemplate="%{text}<br>" + knob + " %{x}<br>" + metric + " %{y:.4f}<extra></extra>",
            marker={"size": 8, "color": RUN_COLORS[0], "opacity": 0.8},
        )
    )
    figure.update_layout(
        title={"text": knob, "font": {"size": 13}},
        height=SMALL,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        showlegend=False,
    )
    categories = any(isinstance(x, str) for x in xs)
    figure.update_xaxes(type="log" if log_x else "category" if categories else None)
    figure.update_yaxes(title={"text": metric})
    return figure
