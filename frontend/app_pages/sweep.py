"""A sweep, deep-linked as ``/sweep?id=<sweep_id>``: its status and counts, a
cancel while it runs, the runs ranked (with only the knobs that vary), a
parallel coordinates chart, the best runs' val_loss overlaid and the metric
against each knob. Follows the sweep live while it runs.

Launched by the API (``POST /api/sweeps``) or from a run's diagnosis ("Try
every suggestion"); the logic is sweep_view's, the figures sweep_charts'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from frontend import sweep_charts, sweep_view
from frontend.api_client import ApiClient, ApiError, get_client
from frontend.run_data import MIN_POINTS, POLL_S, metrics_of
from frontend.run_view import format_value

PAGES = Path(__file__).parent
KNOB_COLUMNS = 3
CHART = {"displaylogo": False}


def pick_sweep(client: ApiClient) -> str | None:
    """The sweep named in the URL, or one the user picks (then put in the URL)."""
    sweep_id = st.query_params.get("id")
    if sweep_id:
        return sweep_id
    st.subheader("Sweep", anchor=False)
    try:
        sweeps = client.list_sweeps()
    except ApiError as exc:
        st.error(f"Could not read the sweeps: {exc.detail}")
        return None
    if not sweeps:
        st.info(
            "No sweep yet. Open a run's diagnosis and press **Try every suggestion**, "
            "or `POST /api/sweeps` a search space."
        )
        return None
    names = {s["id"]: f"{s.get('name') or s['id'][:8]} · {s['status']}" for s in sweeps}
    choice = st.selectbox(
        "Which sweep?", list(names), index=None, format_func=names.__getitem__, width=500
    )
    if choice:
        st.query_params["id"] = choice
        st.rerun()
    return None


def request_cancel(client: ApiClient, sweep_id: str) -> None:
    try:
        client.cancel_sweep(sweep_id)
    except ApiError as exc:
        st.session_state["sweep_notice"] = f"Could not cancel: {exc.detail}"


def header(client: ApiClient, sweep: dict[str, Any]) -> None:
    st.subheader(sweep.get("name") or f"Sweep {sweep['id'][:8]}", anchor=False)
    status = sweep_view.SWEEP_STATUS_MARKDOWN.get(sweep["status"], sweep["status"])
    row = st.container(horizontal=True, vertical_alignment="center")
    row.markdown(
        f"{status} · {sweep['method']} · ranked by {sweep_view.metric_label(sweep)} · "
        f"{sweep['parallel']} at once" + (f" · pruner {sweep['prune']}" if sweep["prune"] else "")
    )
    if sweep["status"] == "running":
        row.button(
            "Cancel sweep", key="cancel-sweep", on_click=request_cancel, args=(client, sweep["id"])
        )
    if sweep.get("source_run_id") and row.button("Its run", key="source-run"):
        st.switch_page(PAGES / "run.py", query_params={"id": sweep["source_run_id"]})
    if sweep.get("error"):
        st.error(sweep["error"])
    if notice := st.session_state.pop("sweep_notice", None):
        st.error(notice)


def ranking(sweep: dict[str, Any], shown: list[str]) -> None:
    rows = sweep_view.ranking_rows(sweep, shown)
    if not rows:
        st.info("No run yet: the first trials are being queued.")
        return
    metric = sweep_view.metric_label(sweep)
    st.dataframe(
        rows,
        hide_index=True,
        column_config={
            metric: st.column_config.NumberColumn(format="%.4f"),
            "best val_loss": st.column_config.NumberColumn(format="%.4f"),
            "best val_acc": st.column_config.NumberColumn(format="percent"),
            "open": st.column_config.LinkColumn("", display_text="open ↗", width="small"),
        },
        key=f"ranking-{sweep['id']}",
    )
    fixed = [k for k in sweep_view.knobs(sweep) if k not in shown]
    if fixed and len(rows) > 1:
        base = sweep.get("runs", [{}])[0].get("params") or {}
        same = ", ".join(f"{k} {format_value(k, base.get(k))}" for k in fixed)
        st.caption(f"The same in every run: {same}.")


def charts(client: ApiClient, sweep: dict[str, Any], shown: list[str]) -> None:
    scored = sweep_view.scored_runs(sweep)
    if not scored:
        return
    maximize = sweep.get("direction") == "maximize"
    if shown:
        st.plotly_chart(
            sweep_charts.parcoords_figure(sweep_view.parcoords_dimensions(sweep, shown), maximize),
            key=f"parcoords-{sweep['id']}",
            config=CHART,
        )
    series = []
    for run in sweep_view.top_runs(sweep):
        try:
            # The epochs are what is drawn: the fewest batch points the API sends.
            series.append((run["name"], metrics_of(client, run, MIN_POINTS)["epochs"]))
        except ApiError:
            continue  # a run deleted meanwhile
    if series:
        st.plotly_chart(
            sweep_charts.curves_figure(series), key=f"curves-{sweep['id']}", config=CHART
        )
    metric = sweep.get("metric") or "val_loss"
    for start in range(0, len(shown), KNOB_COLUMNS):
        columns = st.columns(KNOB_COLUMNS)
        for column, knob in zip(columns, shown[start : start + KNOB_COLUMNS], strict=False):
            xs, ys, names = sweep_view.knob_points(sweep, knob)
            figure = sweep_charts.knob_figure(
                knob, xs, ys, names, f"best {metric}", log_x=sweep_view.is_log(sweep, knob)
            )
            column.plotly_chart(figure, key=f"knob-{sweep['id']}-{knob}", config=CHART)


def live(client: ApiClient, sweep_id: str, seen_status: str) -> None:
    @st.fragment(run_every=POLL_S if seen_status == "running" else None)
    def panel() -> None:
        try:
            sweep = client.get_sweep(sweep_id)
        except ApiError as exc:
            st.warning(f"Could not refresh the sweep: {exc.detail}")
            return
        if sweep["status"] != seen_status:
            st.rerun()  # the whole page: the header, and a timer only while running
        st.markdown(sweep_view.counts_text(sweep))
        shown = sweep_view.varying_knobs(sweep)
        ranking(sweep, shown)
        charts(client, sweep, shown)

    panel()


def main() -> None:
    client = get_client()
    sweep_id = pick_sweep(client)
    if not sweep_id:
        return
    try:
        sweep = client.get_sweep(sweep_id)
    except ApiError as exc:
        st.error(f"No sweep with id `{sweep_id}`." if exc.status == 404 else exc.detail)
        return
    header(client, sweep)
    live(client, sweep_id, sweep["status"])


main()
