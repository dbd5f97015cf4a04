"""Compare, deep-linked as ``/compare?ids=a,b,...``: the runs' curves overlaid
(one colour per run, training solid, validation dashed) and the settings
that differ between them (with an external run among them, the settings that
mean the same thing in both kinds). Follows the runs live while any is active.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend import charts
from frontend.api_client import ApiClient, ApiError, get_client
from frontend.run_data import POLL_S, dataset_names, metrics_of
from frontend.run_tables import compare_rows, compared_settings
from frontend.run_view import ACTIVE_STATUSES, best, differing_fields, run_labels

PICKED = "compare_ids"


def url_ids() -> list[str]:
    raw = st.query_params.get("ids", "")
    return list(dict.fromkeys(i for i in raw.split(",") if i))  # unique, in order


def _to_url() -> None:
    st.query_params["ids"] = ",".join(st.session_state[PICKED])


def pick(runs: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    """The multiselect follows the URL (a link may open this page with other
    ids) and writes its choice back, so the address is always shareable."""
    known = {r["id"] for r in runs}
    from_url = url_ids()
    if st.session_state.get("compare_url") != from_url:
        st.session_state["compare_url"] = from_url
        st.session_state[PICKED] = [i for i in from_url if i in known]
    unknown = [i for i in from_url if i not in known]
    if unknown:
        st.warning(f"No run with id {', '.join(f'`{i}`' for i in unknown)}.")
    return list(
        st.multiselect(
            "Runs",
            [r["id"] for r in runs],
            format_func=labels.__getitem__,
            key=PICKED,
            on_change=_to_url,
            placeholder="Pick two or more runs",
        )
    )


def live(client: ApiClient, ids: list[str], labels: dict[str, str], was_active: bool) -> None:
    @st.fragment(run_every=POLL_S if was_active else None)
    def panel() -> None:
        try:
            runs = [client.get_run(i) for i in ids]
            metrics = {r["id"]: metrics_of(client, r) for r in runs}
        except ApiError as exc:
            st.warning(f"Could not refresh the runs: {exc.detail}")
            return
        if was_active and not any(r["status"] in ACTIVE_STATUSES for r in runs):
            st.rerun()  # the whole page, to redraw without a timer
        series = [(labels[r["id"]], metrics[r["id"]]["epochs"]) for r in runs]
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
        bests = {r["id"]: best(metrics[r["id"]]["epochs"]) for r in runs}
        rows = compare_rows(runs, labels, dataset_names(client), bests)
        st.dataframe(rows, hide_index=True)
        if len(runs) > 1 and not differing_fields(compared_settings(runs)[0]):
            st.caption("The runs' settings are identical.")

    panel()


def main() -> None:
    client = get_client()
    try:
        runs = client.list_runs()
    except ApiError as exc:
        st.error(f"Could not read the runs: {exc.detail}")
        return
    st.subheader("Compare runs", anchor=False)
    if not runs:
        st.info("No run yet: start two under **New run**, then compare them here.")
        return
    labels = run_labels(runs)
    ids = pick(runs, labels)
    if not ids:
        return
    by_id = {r["id"]: r for r in runs}
    live(client, ids, labels, any(by_id[i]["status"] in ACTIVE_STATUSES for i in ids))


main()
