"""Tables of several runs, as plain rows: the Runs list (one row per run) and
the Compare table (one column per run). Only the settings that differ between
the runs shown get a place: the rest is the same for all, so it says nothing.
``epochs`` is left to the "done / total" column, which already shows it.

Worker runs are compared by their whole configs; once an external run is
among them, by what means the same thing in both kinds (fit_summary_view's
``shared_settings``), plus what still differs between the worker runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from frontend.fit_summary_view import (
    SHARED_SETTINGS,
    is_external,
    shared_settings,
    source_text,
)
from frontend.run_view import (
    comparable_config,
    differing_fields,
    format_duration,
    format_value,
    planned_epochs,
)

Row = dict[str, Any]


def epochs_text(run: Row) -> str:
    return f"{run.get('epochs_done') or 0} / {planned_epochs(run) or '?'}"


def compared_settings(runs: Sequence[Row]) -> tuple[list[Row], list[str]]:
    """Each run's settings as the tables compare them, and the fields among
    them that differ (``epochs`` aside)."""
    if not any(is_external(r) for r in runs):
        flats = [comparable_config(r) for r in runs]
        return flats, _settings(flats)
    shared = [shared_settings(r) for r in runs]
    workers = [comparable_config(r) for r in runs if not is_external(r)]
    only_workers = [f for f in _settings(workers) if f not in SHARED_SETTINGS]
    flats = [
        {**({} if is_external(r) else comparable_config(r)), **settings}
        for r, settings in zip(runs, shared, strict=True)
    ]
    return flats, _settings(shared) + only_workers


def runs_rows(runs: Sequence[Row], datasets: Mapping[str, str]) -> tuple[list[Row], list[str]]:
    """The Runs list's rows and the config fields among their columns. The
    outcomes are the run rows' own summaries: no run's metrics are read."""
    flats, fields = compared_settings(runs)
    external = any(is_external(r) for r in runs)
    tagged = any(r.get("tags") for r in runs)
    rows = []
    for run, flat in zip(runs, flats, strict=True):
        # Outcomes first, so they stay in view when many settings differ.
        row: Row = {"run": run.get("name") or run["id"][:8]}
        if external:  # "worker", or "keras · <host>": once the list holds an external run
            row["source"] = source_text(run)
        row |= {
            # Relative, so it works under any base URL the UI is served from.
            "open": f"run?id={run['id']}",
            "status": run["status"],
            "epochs": epochs_text(run),
            "best val_loss": run.get("best_val_loss"),
            "best val_acc": run.get("best_val_accuracy"),
            "duration": format_duration(run.get("duration_s")),
            "dataset": datasets.get(run.get("dataset_id") or "", run.get("dataset_id") or "—"),
        }
        if tagged:
            row["tags"] = ", ".join(run.get("tags") or [])
        row.update({f: format_value(f, flat.get(f)) for f in fields})
        row["created"] = str(run.get("created_at") or "")[5:16].replace("T", " ")
        rows.append(row)
    return rows, fields


def compare_rows(
    runs: Sequence[Row], labels: Mapping[str, str], datasets: Mapping[str, str]
) -> list[Row]:
    """Rows of outcome and differing settings, one column per run label."""

    def row(name: str, values: Sequence[Any]) -> Row:
        return {"": name, **{labels[r["id"]]: v for r, v in zip(runs, values, strict=True)}}

    def number(key: str, pattern: str) -> list[str]:
        found = [r.get(key) for r in runs]
        return ["—" if v is None else pattern.format(v) for v in found]

    rows = [
        row("status", [r["status"] for r in runs]),
        row("epochs", [epochs_text(r) for r in runs]),
        row("best val_loss", number("best_val_loss", "{:.4f}")),
        row("best val_accuracy", number("best_val_accuracy", "{:.1%}")),
        row("duration", [format_duration(r.get("duration_s")) for r in runs]),
    ]
    names = [datasets.get(r.get("dataset_id") or "", r.get("dataset_id") or "—") for r in runs]
    if len(set(names)) > 1:
        rows.append(row("dataset", names))
    sources = [source_text(r) for r in runs]
    if len(set(sources)) > 1:
        rows.append(row("source", sources))
    flats, fields = compared_settings(runs)
    for field in fields:
        rows.append(row(field, [format_value(field, flat.get(field)) for flat in flats]))
    return rows


def _settings(configs: Sequence[Row]) -> list[str]:
    return [f for f in differing_fields(configs) if f != "epochs"]
