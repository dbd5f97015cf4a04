"""The run page's panels: the config as a compact two-column table, the run's
facts, and its status with progress. Thin Streamlit over run_view's functions.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import streamlit as st

from frontend.run_view import (
    ACTIVE_STATUSES,
    STATUS_MARKDOWN,
    best,
    config_groups,
    format_duration,
    progress,
)

# Streamlit's own table style pads every cell generously; the config column
# must show twenty-odd fields in little height, so the table sets its own.
_TABLE = '<table style="width:100%;font-size:0.85rem;border-collapse:collapse;border:none">'
_CELL = "padding:1px 4px;border:none"
# Values may break anywhere: a run id is one long word and must not push the
# table past its column.
_VALUE = "font-weight:600;text-align:right;overflow-wrap:anywhere"
_HEAD = "padding:6px 4px 1px 4px;border:none;border-bottom:1px solid rgba(128,128,128,.35)"


def _table(groups: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str:
    rows = []
    for title, pairs in groups:
        rows.append(
            f'<tr><th colspan="2" style="{_HEAD};text-align:left">{html.escape(title)}</th></tr>'
        )
        rows += [
            f'<tr><td style="{_CELL};opacity:.75">{html.escape(k)}</td>'
            f'<td style="{_CELL};{_VALUE}">{html.escape(v)}</td></tr>'
            for k, v in pairs
        ]
    return _TABLE + "".join(rows) + "</table>"


def config_table(config: dict[str, Any]) -> None:
    st.markdown(_table(config_groups(config)), unsafe_allow_html=True)


def facts_table(run: dict[str, Any], dataset: str | None) -> None:
    started, finished = _time(run.get("started_at")), _time(run.get("finished_at"))
    facts = [
        ("dataset", dataset or run.get("dataset_id") or "deleted"),
        ("classes", str(len(run.get("class_names") or []))),
        ("status", run["status"]),
        ("created", _format(_time(run.get("created_at")))),
        ("started", _format(started)),
        ("finished", _format(finished)),
    ]
    if started and finished:
        facts.append(("took", format_duration((finished - started).total_seconds())))
    if run.get("resumed_at_epoch") is not None:
        facts.append(("resumed at epoch", str(run["resumed_at_epoch"])))
    facts.append(("id", run["id"]))
    st.markdown(_table([("Run", facts)]), unsafe_allow_html=True)


def status_panel(
    run: dict[str, Any], epochs: list[dict[str, Any]], cancel_requested: bool | None
) -> None:
    """Status, a progress bar with ETA, the last epoch's speed, the best epochs."""
    status = run["status"]
    done = progress(run, epochs)
    if status == "queued":
        text = f"{STATUS_MARKDOWN['queued']} · waiting for a worker"
    else:
        text = f"{STATUS_MARKDOWN.get(status, status)} · epoch {done.done} of {done.total}"
        if done.eta_s is not None:
            text += f" · about {format_duration(done.eta_s)} left"
    st.progress(done.fraction, text=text)
    if status == "failed":
        st.error(f"**The run failed:** {run.get('error') or 'no reason recorded'}")
    elif status == "cancelled":
        st.info(f"Cancelled after {done.done} epoch{'s' if done.done != 1 else ''}.")
    elif cancel_requested and status in ACTIVE_STATUSES:
        st.warning("Cancel requested: the worker stops at its next batch.")
    top = best(epochs)
    facts = [
        f"last epoch **{format_duration(done.epoch_s)}**",
        f"**{done.images_per_sec:,.0f}** images/s" if done.images_per_sec else "",
    ]
    for key, pattern in (("val_loss", "{:.4f}"), ("val_accuracy", "{:.1%}")):
        if top[key] is not None:
            facts.append(f"best {key} **{pattern.format(top[key])}** (epoch {top[f'{key}_epoch']})")
    # One line, not four big metrics: the height goes to the curves.
    st.markdown(" · ".join(f for f in facts if f))


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _format(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.utcoffset() is not None else "")
