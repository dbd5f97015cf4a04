"""Datasets: upload a ZIP of class folders, see what the server found in it
(class counts, sample thumbnails, warnings), start a run on it, delete it
(with its runs, once the page has listed them and the user agreed).

Deep link: ``/datasets?id=<dataset_id>`` opens that dataset's summary.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend.api_client import ApiClient, ApiError, get_client
from frontend.choices import unique_labels
from frontend.datasets_view import (
    class_chart,
    dataset_rows,
    draw_samples,
    draw_summary,
    upload,
    upload_limit_mb,
)

NEW_RUN_PAGE = "app_pages/new_run.py"
# Session-state keys of this page.
SELECTED, CONFIRM, UPLOADER, FLASH = "ds.selected", "ds.confirm", "ds.uploader", "ds.flash"
# (dataset id, its runs) once the API said it has runs (409).
IN_USE = "ds.in_use"


@st.cache_data(ttl=600, show_spinner=False)
def _samples(_client: ApiClient, cache_key: str, dataset_id: str) -> list[dict[str, Any]]:
    """A dataset's files never change after upload; ids are never reused."""
    return _client.dataset_samples(dataset_id)


def main() -> None:
    st.title("Datasets")
    client = get_client()
    if flash := st.session_state.pop(FLASH, None):
        st.success(flash)
    table, upload_box = st.columns([3, 2], gap="large")
    with upload_box.container(border=True):
        _upload_form(client)
    try:
        datasets = {d["id"]: d for d in client.list_datasets()}
    except ApiError as exc:
        st.error(f"Could not list the datasets: {exc.detail}")
        return
    with table:
        if not datasets:
            st.info("No dataset yet. Upload a ZIP, or run `curvelab demo` for a small one.")
            return
        st.dataframe(dataset_rows(list(datasets.values())), hide_index=True, width="stretch")
        wanted = st.session_state.get(SELECTED) or st.query_params.get("id")
        st.session_state[SELECTED] = wanted if wanted in datasets else next(iter(datasets))
        names = unique_labels({i: d["name"] for i, d in datasets.items()})
        st.selectbox(
            "Show dataset",
            list(datasets),
            key=SELECTED,
            format_func=names.__getitem__,
            on_change=lambda: st.query_params.update(id=st.session_state[SELECTED]),
        )
    _details(client, datasets[st.session_state[SELECTED]])


def _upload_form(client: ApiClient) -> None:
    st.markdown(
        f"**Upload a dataset**: a .zip of up to {upload_limit_mb()} MB, "
        "one folder of images per class"
    )
    # A new key after each upload gives an empty file picker.
    key = f"upload-{st.session_state.get(UPLOADER, 0)}"
    archive = st.file_uploader(
        "Dataset ZIP",
        type="zip",
        key=key,
        help="One folder per class; a single wrapping folder is fine.",
        label_visibility="collapsed",
    )
    name_box, button_box = st.columns([3, 1], vertical_alignment="bottom")
    name = name_box.text_input("Name (optional)", max_chars=200, placeholder="the ZIP's name")
    if button_box.button("Upload", type="primary", disabled=archive is None, width="stretch"):
        assert archive is not None  # the button is disabled without one
        dataset = upload(client, archive.name, archive.getvalue(), name.strip() or None)
        if dataset is not None:
            st.session_state[SELECTED] = dataset["id"]
            st.session_state[UPLOADER] = st.session_state.get(UPLOADER, 0) + 1


def _details(client: ApiClient, dataset: dict[str, Any]) -> None:
    heading, start, delete = st.columns([4, 2, 1], vertical_alignment="center")
    heading.subheader(dataset["name"])
    start.page_link(
        NEW_RUN_PAGE,
        label="Start a run on this dataset",
        icon=":material/play_arrow:",
        query_params={"dataset": dataset["id"]},
    )
    if delete.button("Delete…", key="ds.delete", width="stretch"):
        st.session_state[CONFIRM] = dataset["id"]
    if st.session_state.get(CONFIRM) == dataset["id"]:
        _confirm_delete(client, dataset)
    draw_summary(dataset)
    counts, samples = st.columns([2, 3], gap="large")
    counts.markdown("**Images per class**")
    counts.plotly_chart(class_chart(dataset), key=f"classes-{dataset['id']}")
    with samples:
        st.markdown("**Samples**")
        try:
            draw_samples(_samples(client, client.cache_key, dataset["id"]))
        except ApiError as exc:
            st.caption(f"No samples: {exc.detail}")


def _confirm_delete(client: ApiClient, dataset: dict[str, Any]) -> None:
    """Asked first; a dataset that has runs is kept (the API answers 409 with
    them) until the user asks to delete them with it."""
    in_use = st.session_state.get(IN_USE)
    runs, total = in_use[1:] if in_use and in_use[0] == dataset["id"] else (None, 0)
    with st.container(border=True):
        if runs is None:
            st.markdown(f"Delete **{dataset['name']}** and its images?")
        else:
            _runs_in_the_way(dataset, runs, total)
        yes, no, _ = st.columns([2, 1, 3])
        if no.button("Keep it", key="ds.keep"):
            st.session_state.pop(CONFIRM, None)
            st.session_state.pop(IN_USE, None)
            st.rerun()
        label = "Delete" if runs is None else f"Delete the dataset and its {_count(total)}"
        if yes.button(label, type="primary", key="ds.delete-confirm"):
            try:
                client.delete_dataset(dataset["id"], delete_runs=runs is not None)
            except ApiError as exc:
                if exc.status == 409 and exc.runs:
                    # The body lists the newest runs; a total, when the API sends one.
                    body = exc.body if isinstance(exc.body, dict) else {}
                    total = int(body.get("total") or len(exc.runs))
                    st.session_state[IN_USE] = (dataset["id"], exc.runs, total)
                    st.rerun()  # ask again, now with the runs it would take
                st.error(f"Not deleted: {exc.detail}")
                return
            st.session_state.pop(CONFIRM, None)
            st.session_state.pop(IN_USE, None)
            st.session_state.pop(SELECTED, None)
            st.query_params.pop("id", None)
            gone = f" and its {_count(total)}" if runs else ""
            st.session_state[FLASH] = f"Deleted “{dataset['name']}”{gone}."
            st.rerun()


def _runs_in_the_way(dataset: dict[str, Any], runs: list[dict[str, Any]], total: int) -> None:
    st.markdown(
        f"**{dataset['name']}** has {_count(total)}: deleting it deletes them too "
        "(their curves, models and files; a queued or running one is cancelled first)."
    )
    shown = [{"run": r.get("name") or r["id"], "status": r.get("status")} for r in runs]
    st.dataframe(shown, hide_index=True, height=min(38 + 35 * len(shown), 300))
    if total > len(runs):
        st.caption(f"The newest {len(runs)} of them.")


def _count(runs: int) -> str:
    return f"{runs} run{'s' if runs != 1 else ''}"


main()
