"""Runs, the default page: every run with its status, dataset, the settings
that set it apart, and its best validation numbers; open one or compare several.

The table refreshes itself while any run is queued or running.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import streamlit as st

from frontend.api_client import ApiClient, ApiError, get_client
from frontend.run_data import POLL_S, dataset_names, metrics_of
from frontend.run_tables import runs_rows
from frontend.run_view import ACTIVE_STATUSES, best

PAGES = Path(__file__).parent
EMPTY = (
    "No run yet. Upload a dataset under **Datasets**, then start a run under **New run**; "
    "or run `curvelab demo`, which uploads a small dataset and starts a short run; "
    "or add `callbacks=[curvelab.Callback()]` to your own `model.fit`."
)


def bests(client: ApiClient, runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for run in runs:
        try:
            found[run["id"]] = best(metrics_of(client, run)["epochs"])
        except ApiError:
            continue  # a run deleted meanwhile; its row still shows what is known
    return found


def table(client: ApiClient, runs: list[dict[str, Any]]) -> list[str]:
    """Draw the table; the ids of the selected rows."""
    rows, fields = runs_rows(runs, dataset_names(client), bests(client, runs))
    columns = {
        "best val_loss": st.column_config.NumberColumn(format="%.4f"),
        "best val_acc": st.column_config.NumberColumn(format="percent"),
        "created": st.column_config.TextColumn(help="UTC, month-day hour:minute"),
        "open": st.column_config.LinkColumn("", display_text="open ↗", width="small"),
    }
    ids = [r["id"] for r in runs]
    # Selection is by row position: a new run shifts the rows, so a new key
    # (a fresh, empty selection) is safer than a selection on the wrong runs.
    key = "runs_" + hashlib.sha1(",".join(ids).encode()).hexdigest()[:12]
    event = st.dataframe(
        rows,
        column_config=columns,
        hide_index=True,
        on_select="rerun",
        selection_mode="multi-row",
        key=key,
    )
    if fields:
        st.caption(f"Only the settings that differ between these runs: {', '.join(fields)}.")
    return [ids[i] for i in event.selection.rows if i < len(ids)]


def main() -> None:
    client = get_client()
    try:
        runs = client.list_runs()
    except ApiError as exc:
        st.error(f"Could not read the runs: {exc.detail}")
        return
    st.subheader("Runs", anchor=False)
    if not runs:
        st.info(EMPTY)
        return
    was_active = any(r["status"] in ACTIVE_STATUSES for r in runs)

    @st.fragment(run_every=POLL_S if was_active else None)
    def live() -> None:
        try:
            current = client.list_runs()
        except ApiError as exc:
            st.warning(f"Could not refresh the runs: {exc.detail}")
            return
        if was_active and not any(r["status"] in ACTIVE_STATUSES for r in current):
            st.rerun()  # the whole page, to draw the table again without a timer
        picked = table(client, current)
        row = st.container(horizontal=True)
        if row.button("Open run", disabled=len(picked) != 1, key="open"):
            st.switch_page(PAGES / "run.py", query_params={"id": picked[0]})
        label = f"Compare {len(picked)} runs" if len(picked) > 1 else "Compare"
        if row.button(label, disabled=len(picked) < 2, key="compare"):
            st.switch_page(PAGES / "compare.py", query_params={"ids": ",".join(picked)})
        row.button("Refresh")  # reruns this fragment, which reads the API again
        if not picked:
            row.caption("Select rows to open a run or compare several.")

    live()


main()
