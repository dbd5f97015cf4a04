"""What the sweep page says about a sweep, as plain functions over the API's
SweepPublic (runs best first, each with the knobs' values it tried in
``params``): the knobs that vary, the ranked table, the parallel coordinates'
dimensions and the metric against each knob. Tests call them directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from frontend.run_view import STATUS_MARKDOWN, format_value

Row = dict[str, Any]

SWEEP_STATUS_MARKDOWN = {
    "running": ":blue[:material/play_circle: running]",
    "finished": ":green[:material/check_circle: finished]",
    "cancelled": ":orange[:material/cancel: cancelled]",
    "failed": ":red[:material/error: failed]",
}
# Best val_loss curves drawn together.
TOP_CURVES = 5


def knobs(sweep: Row) -> list[str]:
    """Every knob of the sweep: its space's, in order, then any other field the
    runs' params name (a "list" sweep's patches)."""
    found = list(sweep.get("space") or {})
    extra = {k for run in sweep.get("runs") or [] for k in (run.get("params") or {})}
    return found + sorted(extra.difference(found))


def varying_knobs(sweep: Row) -> list[str]:
    """The knobs whose values differ between the sweep's runs: the rest says
    nothing about the ranking. Before two runs exist, every knob of the space."""
    runs = [r for r in sweep.get("runs") or [] if r.get("params") is not None]
    every = knobs(sweep)
    if len(runs) < 2:
        return every
    missing = object()
    return [k for k in every if len({repr(r["params"].get(k, missing)) for r in runs}) > 1]


def is_log(sweep: Row, knob: str) -> bool:
    """Whether the knob was sampled on a log scale (a range with ``log``)."""
    knob_space = (sweep.get("space") or {}).get(knob)
    return isinstance(knob_space, dict) and bool(knob_space.get("log"))


def metric_label(sweep: Row) -> str:
    """``best val_loss ↓``: the metric that ranks the runs, and which way."""
    arrow = "↑" if sweep.get("direction") == "maximize" else "↓"
    return f"best {sweep.get('metric') or 'val_loss'} {arrow}"


def ranking_rows(sweep: Row, shown: Sequence[str]) -> list[Row]:
    """The runs best first (as the API ranks them): rank (none until it has a
    value), name, the ``shown`` knobs right after it (what the ranking is
    about, in view on a narrow screen), the metric, then the other outcomes.
    A "list" sweep's variant label is the run's name unless it was renamed;
    best val_loss is the metric's column when the sweep ranks by it."""
    metric = metric_label(sweep)
    by_loss = (sweep.get("metric") or "val_loss") == "val_loss"
    by_acc = sweep.get("metric") == "val_accuracy"
    renamed = any(
        r.get("label") and r.get("label") != r.get("name") for r in sweep.get("runs") or []
    )
    rows = []
    rank = 0
    for run in sweep.get("runs") or []:
        value = _number(run.get("value"))
        rank += value is not None
        row: Row = {
            "rank": rank if value is not None else None,
            "run": run.get("name") or run["id"][:8],
        }
        if renamed:
            row["variant"] = run.get("label") or ""
        params = run.get("params") or {}
        row.update({k: format_value(k, params.get(k)) for k in shown})
        row[metric] = value
        if not by_loss:
            row["best val_loss"] = _number(run.get("best_val_loss"))
        if not by_acc:
            row["best val_acc"] = _number(run.get("best_val_accuracy"))
        row |= {
            "epochs": int(run.get("epochs_done") or 0),
            "status": run.get("status"),
            "open": f"run?id={run['id']}",
        }
        rows.append(row)
    return rows


def counts_text(sweep: Row) -> str:
    """``3 of 8 runs · 2 succeeded · 1 running``."""
    counts = {k: v for k, v in (sweep.get("counts") or {}).items() if v}
    made = sum(counts.values())
    parts = [f"{made} of {sweep.get('max_runs', '?')} runs"]
    parts += [f"{n} {STATUS_MARKDOWN.get(status, status)}" for status, n in counts.items()]
    return " · ".join(parts)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _numeric(values: Sequence[Any]) -> bool:
    return all(_number(v) is not None for v in values)


def axis(sweep: Row, knob: str, values: Sequence[Any]) -> Row:
    """One knob's axis: numbers as they are (log10 for a log range, ticks in
    the knob's own values); anything else (strings, booleans, lists) as
    categories, one tick label each, in their first-seen order."""
    if values and _numeric(values):
        numbers = [float(v) for v in values]
        if is_log(sweep, knob) and min(numbers) > 0:
            logs = [math.log10(v) for v in numbers]
            ticks = sorted(set(numbers))
            return {
                "label": f"{knob} (log)",
                "values": logs,
                "tickvals": [math.log10(v) for v in ticks],
                "ticktext": [f"{v:g}" for v in ticks],
            }
        return {"label": knob, "values": numbers}
    labels = list(dict.fromkeys(format_value(knob, v) for v in values))
    index = {label: i for i, label in enumerate(labels)}
    return {
        "label": knob,
        "values": [index[format_value(knob, v)] for v in values],
        "tickvals": list(range(len(labels))),
        "ticktext": labels,
    }


def scored_runs(sweep: Row) -> list[Row]:
    """The runs with a value of the metric, best first."""
    return [r for r in sweep.get("runs") or [] if _number(r.get("value")) is not None]


def parcoords_dimensions(sweep: Row, shown: Sequence[str]) -> list[Row]:
    """Plotly Parcoords dimensions: one per knob shown, then the metric (the
    runs with a value only: a line needs every axis)."""
    runs = scored_runs(sweep)
    dimensions = [axis(sweep, k, [(r.get("params") or {}).get(k) for r in runs]) for k in shown]
    values = [float(r["value"]) for r in runs]
    dimensions.append({"label": metric_label(sweep), "values": values})
    return dimensions


def knob_points(sweep: Row, knob: str) -> tuple[list[Any], list[float], list[str]]:
    """The metric against one knob: (x per run, value per run, run names);
    x is a category label when the knob is not a number."""
    runs = scored_runs(sweep)
    raw = [(r.get("params") or {}).get(knob) for r in runs]
    numbers = [_number(v) for v in raw]
    xs: list[Any] = numbers if raw and None not in numbers else [format_value(knob, v) for v in raw]
    names = [r.get("name") or r["id"][:8] for r in runs]
    return xs, [float(r["value"]) for r in runs], names


def top_runs(sweep: Row, count: int = TOP_CURVES) -> list[Row]:
    """The best runs that have recorded an epoch: whose curves are drawn."""
    return [r for r in scored_runs(sweep) if r.get("epochs_done")][:count]
