"""Tidying a run up from its page: rename, tags and notes (a form sent as one
PATCH), and delete (asked twice, then back to Runs). Each answer of the API
is shown where the user acted; nothing is changed here on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from frontend.api_client import ApiClient, ApiError
from frontend.run_filters import parse_tags
from frontend.run_view import ACTIVE_STATUSES

PAGES = Path(__file__).parent / "app_pages"
NAME_LIMIT, NOTES_LIMIT = 200, 20_000  # the API's RunPatch limits
# Session-state keys: a message for the page's next run, the run awaiting a delete.
NOTICE, CONFIRM = "run_edit.notice", "run_edit.confirm"
RUNS_FLASH = "runs.flash"  # what the Runs page says once (app_pages/runs.py FLASH)


def changes(run: dict[str, Any], name: str, tags: str, notes: str) -> dict[str, Any]:
    """What the form changes, as a PATCH body: only the fields that differ."""
    found: dict[str, Any] = {}
    if name.strip() and name.strip() != run.get("name"):
        found["name"] = name.strip()
    wanted = parse_tags(tags)
    if wanted != list(run.get("tags") or []):
        found["tags"] = wanted
    if notes != (run.get("notes") or ""):
        found["notes"] = notes
    return found


def edit_form(client: ApiClient, run: dict[str, Any], where: DeltaGenerator) -> None:
    """Name, tags (comma-separated) and notes, saved with one PATCH."""
    run_id = run["id"]
    with where.popover("Edit", help="Rename the run, tag it, write notes (all searchable)."):
        with st.form(f"edit-{run_id}", border=False):
            name = st.text_input("Name", value=run.get("name") or "", max_chars=NAME_LIMIT)
            tags = st.text_input(
                "Tags", value=", ".join(run.get("tags") or []), placeholder="baseline, bn"
            )
            notes = st.text_area(
                "Notes", value=run.get("notes") or "", max_chars=NOTES_LIMIT, height=120
            )
            saved = st.form_submit_button("Save", type="primary")
        if saved:
            body = changes(run, name, tags, notes)
            if not body:
                st.caption("Nothing changed.")
                return
            try:
                client.patch_run(run_id, **body)
            except ApiError as exc:
                st.error(f"Not saved: {exc.detail}")
                return
            st.session_state[NOTICE] = ("success", "Saved.")
            st.rerun()


def delete_button(client: ApiClient, run: dict[str, Any], where: DeltaGenerator) -> None:
    """Delete, once confirmed: its rows, stream and files; then the Runs page."""
    if where.button("Delete…", key="run-delete"):
        st.session_state[CONFIRM] = run["id"]
    if st.session_state.get(CONFIRM) != run["id"]:
        return
    with st.container(border=True):
        active = run["status"] in ACTIVE_STATUSES
        st.markdown(
            f"Delete **{run['name']}**, its curves, model and files? "
            + ("It is cancelled first. " if active else "")
            + "This cannot be undone."
        )
        row = st.container(horizontal=True)
        if row.button("Delete the run", type="primary", key="run-delete-confirm"):
            try:
                client.delete_run(run["id"])
            except ApiError as exc:
                st.error(f"Not deleted: {exc.detail}")
                return
            st.session_state.pop(CONFIRM, None)
            st.session_state[RUNS_FLASH] = f"Deleted “{run['name']}”."
            st.switch_page(PAGES / "runs.py")
        if row.button("Keep it", key="run-delete-keep"):
            st.session_state.pop(CONFIRM, None)
            st.rerun()


def notice() -> None:
    """What the last edit said, once."""
    said = st.session_state.pop(NOTICE, None)
    if said:
        (st.success if said[0] == "success" else st.error)(said[1])
