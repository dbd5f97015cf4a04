"""Runs, the default page: one page of runs at a time (filtered, sorted, each
row with its own best val_loss, val_acc and duration: one API request a page),
the settings that set them apart; open one, compare up to 20, delete some.

The view lives in the URL (frontend/run_filters.py): a deep link such as
``/?status=succeeded&sort=-best_val_loss&page=2&q=lr`` reproduces it, and
changing a filter writes it. The table refreshes itself while any run of the
page is queued or running.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import streamlit as st

from frontend import run_filters as rf
from frontend.api_client import ApiClient, ApiError, get_client
from frontend.run_data import POLL_S, dataset_names
from frontend.run_tables import runs_rows
from frontend.run_view import ACTIVE_STATUSES
from frontend.runs_filter_bar import filters_bar, load_widgets, show, sweep_names, url_view

PAGES = Path(__file__).parent
EMPTY = (
    "No run yet. Upload a dataset under **Datasets**, then start a run under **New run**; "
    "or run `curvelab demo`, which uploads a small dataset and starts a short run; "
    "or add `callbacks=[curvelab.Callback()]` to your own `model.fit`."
)
# Session-state keys: the page read by the full run (handed to the
# fragment's first draw), the rows awaiting a delete confirmation, a message
# for the next run.
FIRST, CONFIRM, FLASH = "runs.first", "runs.confirm", "runs.flash"


def read_page(client: ApiClient, view: rf.RunFilters) -> tuple[rf.RunFilters, dict[str, Any]]:
    """The page of runs ``view`` asks for; past the last page, the last one."""
    found = client.list_runs(**rf.api_params(view))
    last = rf.page_count(int(found.get("total") or 0))
    if view.page > last:
        view = view.at_page(last)
        show(view)
        found = client.list_runs(**rf.api_params(view))
    return view, found


def pager(view: rf.RunFilters, total: int) -> None:
    last = rf.page_count(total)
    row = st.container(horizontal=True, vertical_alignment="center", gap="small")
    row.markdown(f"**{total:,} run{'s' if total != 1 else ''}** · page {view.page} of {last}")
    # Not callbacks: inside the fragment they would rerun only it, with the old view.
    turn = 0
    if row.button("← Previous", key="runs.prev", disabled=view.page <= 1):
        turn = -1
    if row.button("Next →", key="runs.next", disabled=view.page >= last):
        turn = 1
    if turn:
        show(view.at_page(view.page + turn))
        st.rerun()


def table(runs: list[dict[str, Any]], datasets: dict[str, str]) -> list[str]:
    """Draw the table; the ids of the selected rows."""
    rows, fields = runs_rows(runs, datasets)
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


def actions(client: ApiClient, picked: list[str]) -> None:
    row = st.container(horizontal=True, vertical_alignment="center")
    if row.button("Open run", disabled=len(picked) != 1, key="open"):
        st.switch_page(PAGES / "run.py", query_params={"id": picked[0]})
    too_many = rf.compare_note(len(picked))
    label = f"Compare {len(picked)} runs" if len(picked) > 1 else "Compare"
    if row.button(label, disabled=len(picked) < 2 or bool(too_many), key="compare"):
        st.switch_page(PAGES / "compare.py", query_params={"ids": ",".join(picked)})
    if row.button("Delete selected", disabled=not picked, key="delete"):
        st.session_state[CONFIRM] = picked
    row.button("Refresh")  # reruns this fragment, which reads the API again
    if too_many:
        row.caption(too_many)
    elif not picked:
        row.caption("Select rows to open a run, compare up to 20, or delete some.")
    if st.session_state.get(CONFIRM):
        confirm_delete(client, st.session_state[CONFIRM])


def confirm_delete(client: ApiClient, ids: list[str]) -> None:
    count = f"{len(ids)} run{'s' if len(ids) != 1 else ''}"
    with st.container(border=True):
        st.markdown(
            f"Delete **{count}**, with their curves, models and files? "
            "A queued or running one is cancelled first. This cannot be undone."
        )
        row = st.container(horizontal=True)
        if row.button(f"Delete {count}", type="primary", key="delete-confirm"):
            try:
                done = client.delete_runs(ids)
            except ApiError as exc:
                st.error(f"Nothing deleted: {exc.detail}")
                return
            st.session_state.pop(CONFIRM, None)
            deleted = len(done.get("deleted") or [])
            st.session_state[FLASH] = f"Deleted {deleted} run{'s' if deleted != 1 else ''}."
            st.rerun()
        if row.button("Keep them", key="delete-keep"):
            st.session_state.pop(CONFIRM, None)
            st.rerun()


def main() -> None:
    client = get_client()
    view = url_view()
    load_widgets(view)
    st.subheader("Runs", anchor=False)
    if flash := st.session_state.pop(FLASH, None):
        st.success(flash)
    for note in view.notes:
        st.warning(note)
    datasets = dataset_names(client)
    filters_bar(view, datasets, sweep_names(client))
    try:
        view, found = read_page(client, view)
    except ApiError as exc:
        st.error(f"Could not read the runs: {exc.detail}")
        return
    items = list(found.get("items") or [])
    if not items:
        st.info("No run matches these filters." if view.filtered else EMPTY)
        return
    was_active = any(r["status"] in ACTIVE_STATUSES for r in items)
    st.session_state[FIRST] = found

    @st.fragment(run_every=POLL_S if was_active else None)
    def live() -> None:
        # The full run's page on the first draw; the fragment's own reruns read again.
        current = st.session_state.pop(FIRST, None)
        if current is None:
            try:
                current = client.list_runs(**rf.api_params(view))
            except ApiError as exc:
                st.warning(f"Could not refresh the runs: {exc.detail}")
                return
        runs = list(current.get("items") or [])
        if was_active and not any(r["status"] in ACTIVE_STATUSES for r in runs):
            st.rerun()  # the whole page, to draw the table again without a timer
        pager(view, int(current.get("total") or 0))
        actions(client, table(runs, datasets))

    live()


main()
