"""Tables of several runs, as plain rows: the Runs list (one row per run) and
the Compare table (one column per run). Only the settings that differ between
the runs shown get a place: the rest is the same for all, so it says nothing.
``epochs`` is left to the "done / total" column, which already shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from frontend.run_view import comparable_config, differing_fields, format_value

Row = dict[str, Any]


def epochs_text(run: Row) -> str:
    return f"{run.get('epochs_done') or 0} / {(run.get('config') or {}).get('epochs', '?')}"


def runs_rows(
    runs: Sequence[Row], datasets: Mapping[str, str], bests: Mapping[str, Row]
) -> tuple[list[Row], list[str]]:
    """The Runs list's rows and the config fields among their columns."""
    fields = _settings([comparable_config(r) for r in runs])
    rows = []
    for run in runs:
        flat = comparable_config(run)
        top = bests.get(run["id"], {})
        # Outcomes first, so they stay in view when many settings differ.
        row: Row = {
            "run": run.get("name") or run["id"][:8],
            # Relative, so it works under any base URL the UI is served from.
            "open": f"run?id={run['id']}",
            "status": run["status"],
            "epochs": epochs_text(run),
            "best val_loss": top.get("val_loss"),
            "best val_acc": top.get("val_accuracy"),
            "dataset": datasets.get(run.get("dataset_id") or "", run.get("dataset_id") or "—"),
        }
        row.update({f: format_value(f, flat.get(f)) for f in fields})
        row["created"] = str(run.get("created_at") or "")[5:16].replace("T", " ")
        rows.append(row)
    return rows, fields


def compare_rows(
    runs: Sequence[Row],
    labels: Mapping[str, str],
    datasets: Mapping[str, str],
    bests: Mapping[str, Row],
) -> list[Row]:
    """Rows of outcome and differing settings, one column per run label."""

    def row(name: str, values: Sequence[Any]) -> Row:
        return {"": name, **{labels[r["id"]]: v for r, v in zip(runs, values, strict=True)}}

    def number(key: str, pattern: str) -> list[str]:
        found = [bests.get(r["id"], {}).get(key) for r in runs]
        return ["—" if v is None else pattern.format(v) for v in found]

    rows = [
        row("status", [r["status"] for r in runs]),
        row("epochs", [epochs_text(r) for r in runs]),
        row("best val_loss", number("val_loss", "{:.4f}")),
        row("best val_accuracy", number("val_accuracy", "{:.1%}")),
    ]
    names = [datasets.get(r.get("dataset_id") or "", r.get("dataset_id") or "—") for r in runs]
    if len(set(names)) > 1:
        rows.append(row("dataset", names))
    flats = [comparable_config(r) for r in runs]
    for field in _settings(flats):
        rows.append(row(field, [format_value(field, flat.get(field)) for flat in flats]))
    return rows


def _settings(configs: Sequence[Row]) -> list[str]:
    return [f for f in differing_fields(configs) if f != "epochs"]
