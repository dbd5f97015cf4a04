"""Compare, deep-linked as ``/compare?ids=a,b,...`` (up to 20): the runs' curves overlaid
(one colour per run, training solid, validation dashed) and the settings
that differ between them (with an external run among them, the settings that
mean the same thing in both kinds). Follows the runs live while any is active.

At 20 runs it stays light: one metrics request per run, with few batch
points each (the charts draw epochs), and the picker offers the runs named
plus the latest page, never every run.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend import charts
from frontend.api_client import ApiClient, ApiError, get_client
from frontend.run_data import POLL_S, batch_budget, dataset_names, metrics_of
from frontend.run_filters import COMPARE_MAX, PAGE_SIZE
from frontend.run_tables import compare_rows, compared_settings
from frontend.run_view import ACTIVE_STATUSES, differing_fields, run_labels

PICKED = "compare_ids"


def url_ids() -> list[str]:
    raw = st.query_params.get("ids", "")
    return list(dict.fromkeys(i for i in raw.split(",") if i))  # unique, in order


def _to_url() -> None:
    st.query_params["ids"] = ",".join(st.session_state[PICKED])


def pick(runs: list[dict[str, Any]], labels: dict[str, str], from_url: list[str]) -> list[str]:
    """The multiselect follows the URL (a link may open this page with other
    ids) and writes its choice back, so the address is always shareable."""
    known = {r["id"] for r in runs}
    if st.session_state.get("compare_url") != from_url:
        st.session_state["compare_url"] = from_url
        st.session_state[PICKED] = [i for i in from_url if i in known]
    return list(
        st.multiselect(
            "Runs",
            [r["id"] for r in runs],
            format_func=labels.__getitem__,
            key=PICKED,
            on_change=_to_url,
            max_selections=COMPARE_MAX,
            placeholder=f"Pick two or more runs (up to {COMPARE_MAX})",
        )
    )


def choices(client: ApiClient, wanted: list[str]) -> dict[str, dict[str, Any]]:
    """What the picker offers: the runs the URL names, then the latest page;
    never every run. Unknown ids are named."""
    found: dict[str, dict[str, Any]] = {}
    unknown = []
    latest = {r["id"]: r for r in client.list_runs(limit=PAGE_SIZE).get("items") or []}
    for run_id in wanted:
        if run_id in latest:
            found[run_id] = latest[run_id]
            continue
        try:
            found[run_id] = client.get_run(run_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            unknown.append(run_id)
    if unknown:
        st.warning(f"No run with id {', '.join(f'`{i}`' for i in unknown)}.")
    return found | {i: r for i, r in latest.items() if i not in found}


def live(client: ApiClient, runs: list[dict[str, Any]], labels: dict[str, str]) -> None:
    # Read again (each fragment rerun) only the runs last seen active: a final
    # run no longer changes. The dict outlives the reruns of this fragment.
    current = {r["id"]: r for r in runs}
    budget = batch_budget(len(runs))
    was_active = any(r["status"] in ACTIVE_STATUSES for r in runs)

    @st.fragment(run_every=POLL_S if was_active else None)
    def panel() -> None:
        try:
            for run_id, run in list(current.items()):
                if run["status"] in ACTIVE_STATUSES:
                    current[run_id] = client.get_run(run_id)
            shown = list(current.values())
            metrics = {r["id"]: metrics_of(client, r, budget) for r in shown}
        except ApiError as exc:
            st.warning(f"Could not refresh the runs: {exc.detail}")
            return
        if was_active and not any(r["status"] in ACTIVE_STATUSES for r in shown):
            st.rerun()  # the whole page, to redraw without a timer
        series = [(labels[r["id"]], metrics[r["id"]]["epochs"]) for r in shown]
        top = st.columns([1, 3], vertical_alignment="center")
        log_y = top[0].toggle("Log y (loss)", key="compare_log_y")
        top[1].caption("One colour per run: training solid, validation dashed.")
        left, right = st.columns(2, gap="medium")
        config = {"displaylogo": False}
        left.plotly_chart(
            charts.compare_figure(series, "loss", log_y=log_y), key="compare-loss", config=config
        )
        right.plotly_chart(
            charts.compare_figure(series, "accuracy"), key="compare-accuracy", config=config
        )
        rows = compare_rows(shown, labels, dataset_names(client))
        st.dataframe(rows, hide_index=True)
        if len(shown) > 1 and not differing_fields(compared_settings(shown)[0]):
            st.caption("The runs' settings are identical.")

    panel()


def main() -> None:
    client = get_client()
    st.subheader("Compare runs", anchor=False)
    wanted = url_ids()
    if len(wanted) > COMPARE_MAX:
        st.warning(
            f"Compare takes up to {COMPARE_MAX} runs: the first {COMPARE_MAX} "
            f"of the {len(wanted)} in the link are shown."
        )
        wanted = wanted[:COMPARE_MAX]
    try:
        runs = choices(client, wanted)
    except ApiError as exc:
        st.error(f"Could not read the runs: {exc.detail}")
        return
    if not runs:
        st.info("No run yet: start two under **New run**, then compare them here.")
        return
    labels = run_labels(list(runs.values()))
    ids = pick(list(runs.values()), labels, wanted)
    if ids:
        live(client, [runs[i] for i in ids], labels)


main()
