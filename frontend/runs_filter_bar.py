"""The Runs page's filter widgets and the URL they keep in step with: the
URL is the view (frontend/run_filters.py says how it reads); a widget's change
writes it, and a URL changed under the widgets (a deep link, the browser's
back button) loads them.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend import run_filters as rf
from frontend.api_client import ApiClient, ApiError

# Session-state keys: the widgets, and the URL they were last loaded from.
STATUS, DATASET, TAG, SOURCE, Q = "rf.status", "rf.dataset", "rf.tag", "rf.source", "rf.q"
FROM, TO, SWEEP, SORT, SEEN = "rf.from", "rf.to", "rf.sweep", "rf.sort", "runs.url"


def url_view() -> rf.RunFilters:
    return rf.from_query({key: st.query_params.get_all(key) for key in st.query_params})


def widgets_view(page: int = 1) -> rf.RunFilters:
    state = st.session_state
    return rf.RunFilters(
        status=tuple(state.get(STATUS) or ()),
        dataset=state.get(DATASET),
        tags=tuple(rf.parse_tags(state.get(TAG) or "")),
        source=state.get(SOURCE),
        q=(state.get(Q) or "").strip(),
        created_from=state.get(FROM),
        created_to=state.get(TO),
        sweep=state.get(SWEEP),
        sort=state.get(SORT) or rf.DEFAULT_SORT,
        page=page,
    )


def show(view: rf.RunFilters) -> None:
    """Write ``view`` to the URL; the widgets follow it on the next run."""
    st.query_params.from_dict(rf.to_query(view))


def load_widgets(view: rf.RunFilters) -> None:
    """The widgets follow the URL when it changed under them (a deep link,
    the browser's back button); their own changes write it (``show``)."""
    if st.session_state.get(SEEN) == rf.to_query(view):
        return
    st.session_state.update(
        {
            STATUS: list(view.status),
            DATASET: view.dataset,
            TAG: ", ".join(view.tags),
            SOURCE: view.source,
            Q: view.q,
            FROM: view.created_from,
            TO: view.created_to,
            SWEEP: view.sweep,
            SORT: view.sort,
        }
    )
    st.session_state[SEEN] = rf.to_query(view)


def _changed() -> None:
    # A changed filter starts again at page 1; the widgets already show it.
    view = widgets_view()
    st.session_state[SEEN] = rf.to_query(view)
    show(view)


def filters_bar(view: rf.RunFilters, datasets: dict[str, str], sweeps: dict[str, str]) -> None:
    def choice(options: dict[str, str], wanted: str | None, anything: str) -> dict[Any, str]:
        # A value from the URL that no option has (a deleted dataset) is still shown.
        known: dict[Any, str] = {None: anything, **options}
        if wanted and wanted not in known:
            known[wanted] = wanted
        return known

    top = st.columns([3, 2, 2, 2, 2], gap="small")
    top[0].text_input("Search name or notes", key=Q, placeholder="e.g. lr", on_change=_changed)
    top[1].multiselect(
        "Status", rf.STATUSES, key=STATUS, placeholder="any status", on_change=_changed
    )
    shown = choice(datasets, view.dataset, "any dataset")
    top[2].selectbox(
        "Dataset", list(shown), key=DATASET, format_func=shown.__getitem__, on_change=_changed
    )
    top[3].text_input("Tags", key=TAG, placeholder="all of: a, b", on_change=_changed)
    top[4].selectbox(
        "Sort", list(rf.SORTS), key=SORT, format_func=rf.SORTS.__getitem__, on_change=_changed
    )
    more = st.columns([2, 2, 2, 3, 2], gap="small")
    sources = choice({s: s for s in rf.SOURCES}, view.source, "any source")
    more[0].selectbox(
        "Source", list(sources), key=SOURCE, format_func=sources.__getitem__, on_change=_changed
    )
    more[1].date_input(
        "Created from", key=FROM, value=None, format="YYYY-MM-DD", on_change=_changed
    )
    more[2].date_input("Created to", key=TO, value=None, format="YYYY-MM-DD", on_change=_changed)
    swept = choice(sweeps, view.sweep, "any sweep")
    more[3].selectbox(
        "Sweep", list(swept), key=SWEEP, format_func=swept.__getitem__, on_change=_changed
    )
    if view.filtered:
        more[4].button("Clear filters", on_click=show, args=(rf.RunFilters(sort=view.sort),))


def sweep_names(client: ApiClient) -> dict[str, str]:
    """Sweep id → name for the filter; empty when they cannot be read."""
    try:
        return {s["id"]: s.get("name") or s["id"][:8] for s in client.list_sweeps()}
    except ApiError:
        return {}
