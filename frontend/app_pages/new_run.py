"""New run: a dataset, a preset or an earlier run to start from, the
architecture, then every TrainConfig field it uses in four groups. Submitting
lands on the run's page; the API's 422 is shown next to the field it names.

Deep links: ``/new-run?dataset=<id>`` preselects a dataset,
``/new-run?clone=<run_id>`` pre-fills the form (and dataset) from that run.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend.api_client import ApiClient, ApiError, get_client
from frontend.choices import unique_labels
from frontend.config_form import (
    FIELDS,
    GROUPS,
    FormError,
    build_config,
    errors_by_field,
    shown_fields,
    widget_keys,
    widget_values,
)
from frontend.config_widgets import draw_architecture, draw_group, network_note

DEFAULT_PRESET = "seed-cnn"
CLONE_CHOICES = 50
RUN_PAGE = "app_pages/run.py"
DATASETS_PAGE = "app_pages/datasets.py"
# Session-state keys of this page (cfg.* hold the form's widgets).
DATASET, PRESET, CLONE, NAME = "nr.dataset", "nr.preset", "nr.clone", "nr.name"
LOADED, ERRORS = "nr.loaded", "nr.errors"


@st.cache_data(ttl=300, show_spinner=False)
def _presets(_client: ApiClient, cache_key: str) -> list[dict[str, Any]]:
    """Presets change only with a new API version; ``cache_key`` keys the cache."""
    return _client.list_presets()


def main() -> None:
    st.title("New run")
    client = get_client()
    try:
        datasets = {d["id"]: d for d in client.list_datasets()}
        runs = clone_choices(client, st.query_params.get("clone"))
        presets = {p["name"]: p for p in _presets(client, client.cache_key)}
    except ApiError as exc:
        st.error(f"Could not read from the API: {exc.detail}")
        return
    if not datasets:
        st.info("There is no dataset yet: upload one first.")
        st.page_link(DATASETS_PAGE, label="Go to Datasets", icon=":material/upload:")
        return

    _choose_defaults(datasets, runs, presets)
    _load_form(runs, presets)
    _choosers(datasets, runs, presets)
    summary, errors = st.session_state.get(ERRORS, (None, {}))
    if summary:
        st.error(f"**The run was not started.** {summary}")
    architecture = draw_architecture(errors.get("architecture"))

    with st.form("new_run", border=False):
        # The button sits beside the name, above the groups, so it is always in view.
        name, button = st.columns([3, 1], vertical_alignment="bottom")
        name.text_input("Run name (optional)", key=NAME, max_chars=200, placeholder="e.g. bn 0.9")
        if errors.get("name"):
            name.error(errors["name"])
        with button:
            submitted = st.form_submit_button("Start training", type="primary", width="stretch")
        for column, (group, fields) in zip(st.columns(len(GROUPS)), GROUPS.items(), strict=True):
            with column.container(border=True):
                st.markdown(f"**{group}**")
                if group == "Network":
                    network_note(architecture)
                shown = shown_fields(fields, architecture)
                draw_group(tuple(f for f in shown if f.name != "architecture"), errors)
    if submitted:
        _submit(client)


def clone_choices(client: ApiClient, wanted: str | None) -> dict[str, Any]:
    """Runs to clone: the latest worker runs, and the one the URL names (never
    every run). Only a worker's run has a config to clone; an external one's is
    in its script."""
    latest = client.list_runs(limit=CLONE_CHOICES, source="worker").get("items") or []
    runs = {r["id"]: r for r in latest if r.get("config")}
    if wanted and wanted not in runs:
        try:
            run = client.get_run(wanted)
        except ApiError as exc:
            if exc.status != 404:
                raise
        else:
            if run.get("config"):
                runs = {wanted: run, **runs}
    return runs


def _choose_defaults(
    datasets: dict[str, Any], runs: dict[str, Any], presets: dict[str, Any]
) -> None:
    """First values of the choosers: from the URL, else the question's network."""
    if CLONE not in st.session_state:
        clone = st.query_params.get("clone")
        if clone and clone not in runs:
            st.warning(
                f"There is no run `{clone}` to clone (an external run's settings live in "
                "its script); starting from a preset."
            )
            clone = None
        st.session_state[CLONE] = clone
    if PRESET not in st.session_state:
        st.session_state[PRESET] = (
            DEFAULT_PRESET if DEFAULT_PRESET in presets else next(iter(presets))
        )
    if DATASET not in st.session_state:
        clone = st.session_state[CLONE]
        wanted = [st.query_params.get("dataset"), clone and runs[clone].get("dataset_id")]
        st.session_state[DATASET] = next((d for d in wanted if d in datasets), next(iter(datasets)))


def _load_form(runs: dict[str, Any], presets: dict[str, Any]) -> None:
    """Fill the form from the chosen run or preset when that choice changed (or
    Streamlit dropped the widgets' state after a visit to another page)."""
    clone = st.session_state[CLONE]
    source = ("run", clone) if clone else ("preset", st.session_state[PRESET])
    keys = [key for field in FIELDS.values() for key in widget_keys(field)]
    if st.session_state.get(LOADED) == source and all(k in st.session_state for k in keys):
        return
    config = runs[clone]["config"] if clone else presets[source[1]]["config"]
    st.session_state.update(widget_values(config))
    st.session_state[LOADED] = source
    st.session_state.pop(ERRORS, None)  # they were about other values


def _choosers(datasets: dict[str, Any], runs: dict[str, Any], presets: dict[str, Any]) -> None:
    left, middle, right = st.columns(3)
    dataset_names = unique_labels({i: d["name"] for i, d in datasets.items()})
    run_names = unique_labels({i: f"{r['name']} · {r['status']}" for i, r in runs.items()})
    chosen = left.selectbox(
        "Dataset", list(datasets), key=DATASET, format_func=dataset_names.__getitem__
    )
    left.caption(_dataset_line(datasets[chosen]))
    preset = middle.selectbox(
        "Start from a preset", list(presets), key=PRESET, on_change=_on_preset
    )
    clone = right.selectbox(
        "… or clone an earlier run",
        list(runs),
        key=CLONE,
        index=None,
        placeholder="Choose a run",
        format_func=run_names.__getitem__,
        on_change=_on_clone,
        args=(runs, datasets),
    )
    if clone:
        middle.caption("Not used: the form holds the cloned run's settings.")
        gone = "" if runs[clone].get("dataset_id") in datasets else " Its dataset is gone."
        right.caption(
            f"Pre-filled from run **{runs[clone]['name']}**; edit what should change.{gone}"
        )
    else:
        middle.caption(presets[preset]["description"])


def _dataset_line(dataset: dict[str, Any]) -> str:
    shapes = dataset.get("image_shapes") or []
    common = f" · mostly {shapes[0]['height']}×{shapes[0]['width']} px" if shapes else ""
    return f"{dataset['num_images']} images · {len(dataset['classes'])} classes{common}"


def _on_preset() -> None:
    # A preset replaces a clone; the URL should no longer claim one.
    st.session_state[CLONE] = None
    st.query_params.pop("clone", None)
    st.session_state.pop(ERRORS, None)


def _on_clone(runs: dict[str, Any], datasets: dict[str, Any]) -> None:
    clone = st.session_state[CLONE]
    st.session_state.pop(ERRORS, None)
    if not clone:
        st.query_params.pop("clone", None)
        return
    st.query_params["clone"] = clone
    if runs[clone].get("dataset_id") in datasets:
        st.session_state[DATASET] = runs[clone]["dataset_id"]


def _submit(client: ApiClient) -> None:
    values = {key: st.session_state[key] for f in FIELDS.values() for key in widget_keys(f)}
    try:
        config = build_config(values)
        run = client.create_run(
            st.session_state[DATASET], config, st.session_state[NAME].strip() or None
        )
    except FormError as exc:
        st.session_state[ERRORS] = (str(exc), {exc.field: exc.message})
    except ApiError as exc:
        placed = errors_by_field(exc.field_errors()) if exc.status == 422 else {}
        st.session_state[ERRORS] = (exc.detail, placed)
    else:
        st.session_state.pop(ERRORS, None)
        st.switch_page(RUN_PAGE, query_params={"id": run["id"]})
    # Show the messages beside the widgets, which are already drawn in this run.
    st.rerun()


main()
