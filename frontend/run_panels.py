"""The run page's panels: the config (or an external run's fit settings and
model) as compact tables, the run's facts, its status with progress, and the
diagnosis. Thin Streamlit over run_view's, fit_summary_view's and charts' functions.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import streamlit as st

from frontend import gap_chart
from frontend.fit_summary_view import (
    finding_change,
    finding_key,
    fit_groups,
    is_external,
    layer_rows,
    model_caption,
    probe_notes,
    shared_settings,
    source_text,
    summary_of,
)
from frontend.run_view import (
    ACTIVE_STATUSES,
    STATUS_MARKDOWN,
    best,
    config_groups,
    format_duration,
    patch_changes,
    patch_text,
    progress,
)

ALERTS = {"critical": st.error, "warning": st.warning, "info": st.info}
# Starts a run with a suggested patch and leaves the page; or says why it could not.
StartFix = Callable[[dict[str, Any]], str | None]
# Starts one sweep of every suggestion and leaves the page; or says why not.
TryAll = Callable[[], str | None]

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


def config_table(
    config: dict[str, Any],
    unknown: dict[str, Any] | None = None,
    notes: Sequence[str] | None = None,
) -> None:
    """The config the run trains with; below it, what an earlier version stored
    that this one does not use, and the stored values replaced by defaults."""
    st.markdown(_table(config_groups(config, unknown)), unsafe_allow_html=True)
    for note in notes or ():
        st.caption(f":orange[:material/warning:] {note}")


def summary_table(run: dict[str, Any]) -> None:
    """Where a worker run shows its config: an external run's fit settings, as
    its script's callback described them, and what its probes could not measure."""
    st.markdown(_table(fit_groups(run)), unsafe_allow_html=True)
    for note in probe_notes(run):
        st.caption(f":orange[:material/info:] {note}")


def model_table(run: dict[str, Any]) -> None:
    """An external run's model layer by layer: the part of a worker run's
    config that says what network it trains."""
    rows = layer_rows(summary_of(run))
    st.subheader("The model", anchor=False)
    st.caption(model_caption(summary_of(run)))
    if not rows:
        st.markdown("The script sent no layers.")
        return
    st.dataframe(
        rows,
        hide_index=True,
        column_config={"params": st.column_config.NumberColumn(format="localized")},
        key=f"layers-{run['id']}",
    )


def facts_table(run: dict[str, Any], dataset: str | None) -> None:
    started, finished = _time(run.get("started_at")), _time(run.get("finished_at"))
    external = is_external(run)
    facts = [
        # An external run's data stayed in the user's process: where it ran instead.
        ("source", source_text(run))
        if external
        else ("dataset", dataset or run.get("dataset_id") or "deleted"),
        (
            "classes",
            str(shared_settings(run)["classes"] or "—")
            if external
            else str(len(run.get("class_names") or [])),
        ),
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
    elif status == "pruned":
        st.warning(
            f"**Pruned by its sweep** after {done.done} epoch{'s' if done.done != 1 else ''}: "
            f"{run.get('error') or 'no reason recorded'}"
        )
    elif status == "interrupted":
        st.info(
            f"Interrupted after {done.done} epoch{'s' if done.done != 1 else ''}: "
            "the script was stopped (KeyboardInterrupt)."
        )
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


def diagnosis_section(
    run: dict[str, Any],
    diagnosis: dict[str, Any],
    start_fix: StartFix,
    try_all: TryAll | None = None,
) -> None:
    """The findings, most severe first, each with its fix when a knob moves it;
    then the gap of each epoch in parts, when the run measured them."""
    if not diagnosis.get("epochs"):
        return  # nothing to explain before the first epoch
    with st.container():
        st.subheader("Why the curves look like this", anchor=False)
        findings = diagnosis.get("findings") or []
        if not findings:
            st.markdown("Nothing stands out in these curves so far.")
        for finding in findings:
            _finding(run, finding, start_fix)
        if try_all is not None and suggested(run, findings):
            _try_all(run, try_all)
        decomposition = diagnosis.get("decomposition") or []
        if gap_chart.gap_rows(decomposition):
            st.plotly_chart(
                gap_chart.gap_figure(decomposition),
                key=f"gap-{run['id']}",
                config={"displaylogo": False},
            )


def suggested(run: dict[str, Any], findings: Sequence[dict[str, Any]]) -> bool:
    """Whether a sweep of the suggestions can be offered: a worker run (the
    server can re-run it) with at least one suggestion that changes its config."""
    if is_external(run) or not run.get("config"):
        return False
    return any(patch_changes(run["config"], f.get("suggestion") or {}) for f in findings)


def _try_all(run: dict[str, Any], try_all: TryAll) -> None:
    key = f"try-all-{run['id']}"
    deleted = not run.get("dataset_id")
    why = (
        "This run's dataset was deleted: upload it again to start runs on it."
        if deleted
        else "One sweep: this config, each suggested change, and all of them together; "
        "opens the sweep's page."
    )
    if st.button("Try every suggestion", key=key, disabled=deleted, help=why) and not deleted:
        st.session_state[f"{key}-error"] = try_all()  # leaves the page on success
    error = st.session_state.get(f"{key}-error")
    if error:
        st.error(f"Could not start the sweep: {error}")


def _finding(run: dict[str, Any], finding: dict[str, Any], start_fix: StartFix) -> None:
    evidence = finding.get("evidence") or ""
    evidence = evidence[:1].upper() + evidence[1:] + ("" if evidence.endswith(".") else ".")
    title = finding.get("title") or "Finding"
    ALERTS.get(finding.get("severity", ""), st.info)(f"**{title}**  \n{evidence}")
    if is_external(run) or not run.get("config"):
        # The server cannot re-run the user's script: the fix is theirs to make.
        change = finding_change(finding)
        if change:
            st.caption("The change to make in your script:")
            st.code(change, language="python")
        return
    suggestion = finding.get("suggestion") or {}
    changes = patch_changes(run["config"], suggestion)
    if not changes:
        return
    key = f"fix-{run['id']}-{finding_key(finding)}"
    row = st.container(horizontal=True, vertical_alignment="center", gap="small")
    row.markdown(f"Suggested: `{patch_text(changes)}`")
    deleted = not run.get("dataset_id")
    why = "A new run with this change, opened beside this one in Compare."
    if deleted:
        why = "This run's dataset was deleted: upload it again to start a run on it."
    # A click can arrive from a page drawn before the dataset went: ignore it.
    if row.button("Try this fix", key=key, disabled=deleted, help=why) and not deleted:
        st.session_state.pop(f"{key}-error", None)
        st.session_state[f"{key}-error"] = start_fix(suggestion)  # leaves the page on success
    error = st.session_state.get(f"{key}-error")
    if error:
        st.error(f"Could not start the fix: {error}")


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
