"""Datasets: upload a ZIP of class folders, see what the server found in it
(class counts, sample thumbnails, warnings), start a run on it, delete it.

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
    with st.container(border=True):
        st.markdown(
            f"Delete **{dataset['name']}** and its images? "
            "Finished runs keep their curves and models."
        )
        yes, no, _ = st.columns([1, 1, 4])
        if no.button("Keep it", key="ds.keep"):
            st.session_state.pop(CONFIRM, None)
            st.rerun()
        if yes.button("Delete", type="primary", key="ds.delete-confirm"):
            try:
                client.delete_dataset(dataset["id"])
            except ApiError as exc:
                st.error(f"Not deleted: {exc.detail}")  # e.g. 409, runs still active
                return
            st.session_state.pop(CONFIRM, None)
            st.session_state.pop(SELECTED, None)
            st.query_params.pop("id", None)
            st.session_state[FLASH] = f"Deleted “{dataset['name']}”."
            st.rerun()


main()
