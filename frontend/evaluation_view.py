"""What a run's evaluation and predictions look like, as plain functions: the
confusion matrix as a heatmap (counts or row-normalised), the per-class
table, the prediction bars. Tests check the figures without Streamlit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

Row = dict[str, Any]

# Cell numbers are drawn while they fit; beyond, the hover says them.
MAX_LABELLED_CLASSES = 20


def row_normalised(confusion: Sequence[Sequence[int]]) -> list[list[float]]:
    """Each row as shares of its class's images (a row without images stays 0)."""
    shares = []
    for row in confusion:
        total = sum(row)
        shares.append([count / total if total else 0.0 for count in row])
    return shares


def confusion_height(classes: int) -> int:
    """Square-ish cells, within a 1400×900 window's reach."""
    return int(min(max(260 + 26 * classes, 360), 820))


def confusion_figure(
    classes: Sequence[str], confusion: Sequence[Sequence[int]], *, normalised: bool = False
) -> go.Figure:
    """True class down (first class at the top), predicted class across."""
    names = [str(name) for name in classes]
    z: Sequence[Sequence[float]] = row_normalised(confusion) if normalised else confusion
    counts = [[int(count) for count in row] for row in confusion]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            customdata=counts,
            colorscale="Blues",
            zmin=0,
            zmax=1 if normalised else None,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata} images"
            + (" (%{z:.0%} of the class)" if normalised else "")
            + "<extra></extra>",
            colorbar={"title": {"text": "share" if normalised else "images"}, "thickness": 12},
        )
    )
    if len(names) <= MAX_LABELLED_CLASSES:
        fig.update_traces(texttemplate="%{z:.0%}" if normalised else "%{z}", textfont={"size": 11})
    fig.update_layout(
        height=confusion_height(len(names)),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )
    # Categories as they are: a class named "1" stays a name, not a number.
    fig.update_xaxes(title={"text": "predicted class"}, type="category", tickangle=-45)
    fig.update_yaxes(title={"text": "true class"}, type="category", autorange="reversed")
    return fig


def per_class_rows(evaluation: Row) -> list[Row]:
    """One row per class for a table: its scores, and where its images went wrong."""
    classes = evaluation.get("classes") or []
    confusion = evaluation.get("confusion") or []
    rows = []
    for index, scores in enumerate(evaluation.get("per_class") or []):
        row = confusion[index] if index < len(confusion) else []
        confused = [(count, classes[j]) for j, count in enumerate(row) if j != index and count]
        top = max(confused, default=None)
        rows.append(
            {
                "class": scores.get("name"),
                "precision": scores.get("precision"),
                "recall": scores.get("recall"),
                "F1": scores.get("f1"),
                "support": scores.get("support"),
                "most often taken for": f"{top[1]} ({top[0]})" if top else "",
            }
        )
    return rows


def summary_markdown(evaluation: Row) -> str:
    """One line: accuracy, F1 and loss, on how many images, from which epoch."""
    weights = evaluation.get("weights")
    which = "lowest val_loss" if weights == "best" else "last epoch"
    parts = [
        f"Validation accuracy **{evaluation['accuracy']:.1%}** on {evaluation['images']} images"
    ]
    if evaluation.get("macro_f1") is not None:
        parts.append(f"macro F1 **{evaluation['macro_f1']:.3f}**")
    if evaluation.get("loss") is not None:
        parts.append(f"loss {evaluation['loss']:.4f}")
    parts.append(f"weights of epoch {evaluation['epoch']} ({which})")
    return " · ".join(parts)


def weights_label(weights: str, epoch: int | None = None) -> str:
    name = "Best epoch" if weights == "best" else "Final epoch"
    return f"{name} ({epoch})" if epoch is not None else name


def mistake_caption(mistake: Row) -> str:
    return f"{mistake['true']} → {mistake['predicted']} · {mistake['confidence']:.0%}"


def prediction_figure(top: Sequence[Row]) -> go.Figure:
    """The top-k classes as horizontal bars, most probable at the top."""
    names = [str(entry["name"]) for entry in top]
    probabilities = [float(entry["probability"]) for entry in top]
    fig = go.Figure(
        go.Bar(
            x=probabilities,
            y=names,
            orientation="h",
            marker={"color": ["#1f77b4"] + ["#aec7e8"] * (len(names) - 1)},
            text=[f"{p:.1%}" for p in probabilities],
            textposition="auto",
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        )
    )
    fig.update_layout(height=80 + 34 * len(names), margin={"l": 10, "r": 10, "t": 10, "b": 10})
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title={"text": "probability"})
    fig.update_yaxes(type="category", autorange="reversed")
    return fig
