"""Run page, deep-linked as ``/run?id=<run_id>``: the configuration in a narrow
column beside the live curves, progress, the diagnosis, and what can be done
with the run (edit its name, tags and notes, delete it: run_edit; open its
sweep); once it has trained, what the model learned (evaluation_panel).
An external run (the user's own ``model.fit``) shows its fit settings and model
where a worker run shows its config, and each finding's fix as the code to change
in the script: the server cannot clone, re-run or evaluate it.

The part that changes while a run trains (status, progress, curves, diagnosis)
is one fragment that re-reads the API every ``POLL_S`` seconds while the run is
active; a status change reruns the whole page, which redraws the fragment
without a timer once the run is final.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import streamlit as st

from frontend import charts
from frontend.api_client import ApiClient, ApiError, get_client
from frontend.evaluation_panel import evaluation_section
from frontend.fit_summary_view import is_external
from frontend.run_data import POLL_S, dataset_names
from frontend.run_edit import delete_button, edit_form
from frontend.run_edit import notice as edit_notice
from frontend.run_panels import (
    config_table,
    diagnosis_section,
    facts_table,
    model_table,
    status_panel,
    summary_table,
)
from frontend.run_view import (
    ACTIVE_STATUSES,
    fix_run_name,
    metrics_csv,
    patch_changes,
    run_labels,
)

PAGES = Path(__file__).parent
# The pickers offer the latest runs, never all of them.
PICK_FROM = 50


def pick_run(client: ApiClient) -> str | None:
    """The run named in the URL, or one the user picks (then put in the URL)."""
    run_id = st.query_params.get("id")
    if run_id:
        return run_id
    runs = client.list_runs(limit=PICK_FROM).get("items") or []
    if not runs:
        st.info(
            "No run yet. Upload a dataset under **Datasets**, then start one under **New run**."
        )
        return None
    st.subheader("Run", anchor=False)
    labels = run_labels(runs)
    choice = st.selectbox(
        "Which run?",
        [r["id"] for r in runs],
        index=None,
        format_func=labels.__getitem__,
        placeholder="Pick a run",
        width=500,
    )
    if choice:
        st.query_params["id"] = choice
        st.rerun()  # draw the run without the picker
    return None


def request_cancel(client: ApiClient, run_id: str) -> None:
    # A callback, so the fragment's next read already sees the cancelled run.
    try:
        run = client.cancel_run(run_id)
    except ApiError as exc:
        st.session_state["run_notice"] = ("error", f"Could not cancel: {exc.detail}")
        return
    if run.get("status") in ACTIVE_STATUSES:
        st.session_state[f"cancel_requested_{run_id}"] = True


def actions(client: ApiClient, run: dict[str, Any]) -> None:
    """The row of things to do with a run; drawn on full reruns, which every
    status change triggers, so it always matches the status."""
    run_id = run["id"]
    external = is_external(run)
    row = st.container(horizontal=True, gap="small")
    # An external run stops when its script does: nothing here can cancel it.
    if run["status"] in ACTIVE_STATUSES and not external:
        row.button("Cancel run", on_click=request_cancel, args=(client, run_id), key="cancel")
    # An external run has a model only if its script uploaded one (else the API answers 409).
    has_model = client.has_model(run_id) if external else run["status"] == "succeeded"
    if has_model:
        row.download_button(
            "Download model",
            data=partial(client.run_model, run_id),  # fetched only when clicked
            file_name=f"curvelab-{run_id}.keras",
            mime="application/octet-stream",
            on_click="ignore",
            key="download_model",
        )
    row.download_button(
        "Metrics CSV",
        data=partial(_csv, client, run_id),
        file_name=f"curvelab-{run_id}-metrics.csv",
        mime="text/csv",
        on_click="ignore",
        key="download_csv",
    )
    if not external and row.button(
        "Clone", help="A new run with this configuration, to change a knob."
    ):
        st.switch_page(PAGES / "new_run.py", query_params={"clone": run_id})
    with row.popover("Compare with…"):
        latest = client.list_runs(limit=PICK_FROM).get("items") or []
        others = [r for r in latest if r["id"] != run_id]
        labels = run_labels(others)
        picked = st.multiselect(
            "Other runs",
            [r["id"] for r in others],
            format_func=labels.__getitem__,
            key="compare_with",
            placeholder="Pick one or more",
        )
        if st.button("Compare", disabled=not picked, type="primary"):
            st.switch_page(PAGES / "compare.py", query_params={"ids": ",".join([run_id, *picked])})
    if run.get("sweep_id") and row.button("Its sweep", key="open-sweep"):
        st.switch_page(PAGES / "sweep.py", query_params={"id": run["sweep_id"]})
    edit_form(client, run, row)
    delete_button(client, run, row)


def _csv(client: ApiClient, run_id: str) -> str:
    return metrics_csv(client.run_metrics(run_id)["epochs"])


def start_fix(client: ApiClient, run: dict[str, Any], suggestion: dict[str, Any]) -> str | None:
    """A new run of the same dataset with ``suggestion`` applied, then Compare
    with both; what the API said when it refused."""
    name = fix_run_name(run["name"], patch_changes(run["config"], suggestion))
    try:
        new = client.create_run(run["dataset_id"], {**run["config"], **suggestion}, name=name)
    except ApiError as exc:
        return exc.detail
    st.switch_page(PAGES / "compare.py", query_params={"ids": f"{run['id']},{new['id']}"})
    return None


def try_every_suggestion(client: ApiClient, run: dict[str, Any]) -> str | None:
    """One sweep of the run's config, each suggested patch and their
    combination, then its page; what the API said when it refused."""
    try:
        sweep = client.try_suggestions(run["id"])
    except ApiError as exc:
        return exc.detail
    st.switch_page(PAGES / "sweep.py", query_params={"id": sweep["id"]})
    return None


def live(client: ApiClient, run_id: str, seen_status: str) -> None:
    """Status, progress, curves and diagnosis; polls only while the run is active."""

    @st.fragment(run_every=POLL_S if seen_status in ACTIVE_STATUSES else None)
    def panel() -> None:
        try:
            run = client.get_run(run_id)
            metrics = client.run_metrics(run_id)
        except ApiError as exc:
            st.warning(f"Could not refresh the run: {exc.detail}")
            return
        if run["status"] != seen_status:
            st.rerun()  # the whole page: facts, actions, and a timer only if still active
        status_panel(run, metrics["epochs"], st.session_state.get(f"cancel_requested_{run_id}"))
        curves(run_id, metrics)
        try:
            diagnosis = client.run_diagnosis(run_id)
        except ApiError as exc:  # the curves are still worth showing
            st.caption(f"No diagnosis: {exc.detail}")
            return
        diagnosis_section(
            run,
            diagnosis,
            partial(start_fix, client, run),
            partial(try_every_suggestion, client, run),
        )

    panel()


def curves(run_id: str, metrics: dict[str, Any]) -> None:
    epochs, batches = metrics["epochs"], metrics["batches"]
    # Each control as wide as its label, so all fit one line of the column.
    toggles = st.container(horizontal=True, vertical_alignment="center", gap="small")
    show_batches = toggles.toggle("Batch points", value=True, key="show_batches")
    log_y = toggles.toggle("Log y", key="log_y")
    centre_loss = toggles.toggle(
        "Train loss at epoch − 0.5",
        key="centre_loss",
        help="The reported training loss is a running mean over the epoch, centred half "
        "an epoch before val_loss is measured: this shows how much of the gap is that lag.",
    )
    toggles.markdown("Smoothing", width="content")
    smoothing = toggles.slider(
        "Batch smoothing",
        0.0,
        0.99,
        0.6,
        step=0.01,
        key="smoothing",
        disabled=not show_batches,
        label_visibility="collapsed",
        width=140,
    )
    loss = charts.loss_figure(
        epochs,
        batches,
        show_batches=show_batches,
        smoothing=smoothing,
        log_y=log_y,
        centre_loss=centre_loss,
    )
    # Stable keys: a redrawn chart with a generated id would collide (streamlit#9752).
    st.plotly_chart(loss, key=f"loss-{run_id}", config={"displaylogo": False})
    if metrics.get("downsampled"):  # the API drew a bounded number of them
        total = metrics.get("batches_total", len(batches))
        note = st.container(horizontal=True, vertical_alignment="center", gap="small")
        note.caption(
            f"{len(batches):,} of {total:,} batch points drawn: the lowest and highest loss "
            "of each stretch of steps."
        )
        note.download_button(
            "All batch points (CSV)",
            data=partial(get_client().run_batches_csv, run_id),  # fetched on click only
            file_name=f"curvelab-{run_id}-batches.csv",
            mime="text/csv",
            key=f"batches-csv-{run_id}",
            on_click="ignore",
        )
    st.plotly_chart(
        charts.accuracy_figure(epochs), key=f"accuracy-{run_id}", config={"displaylogo": False}
    )


def labels(run: dict[str, Any]) -> None:
    """Its tags and notes, under its name, when it has any."""
    if run.get("tags"):
        # Brackets would end a badge early; tags hold no newline or comma.
        shown = (t.replace("[", "(").replace("]", ")") for t in run["tags"])
        st.markdown(" ".join(f":blue-badge[{tag}]" for tag in shown))
    if run.get("notes"):
        st.caption(run["notes"])


def main() -> None:
    client = get_client()
    run_id = pick_run(client)
    if not run_id:
        return
    try:
        run = client.get_run(run_id)
    except ApiError as exc:
        st.error(f"No run with id `{run_id}`." if exc.status == 404 else exc.detail)
        return
    notice = st.session_state.pop("run_notice", None)
    if notice:
        st.error(notice[1])
    edit_notice()
    st.subheader(run["name"], anchor=False)
    labels(run)
    config_column, curves_column = st.columns([1, 3], gap="medium")
    external = is_external(run)
    with config_column:
        if external:
            summary_table(run)
        else:
            config_table(run["config"] or {}, run.get("config_unknown"), run.get("config_notes"))
        facts_table(run, dataset_names(client).get(run.get("dataset_id") or ""))
    with curves_column:
        actions(client, run)
        live(client, run_id, run["status"])
    # Full width, under both columns: a confusion matrix of many classes needs it,
    # and so does a model's layer table (an external run has no evaluation: no stored data).
    if external:
        model_table(run)
    else:
        evaluation_section(client, run)


main()
