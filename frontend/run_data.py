"""Reads the run pages share: metrics (cached once a run is final, since they
can no longer change) and dataset names. Every read goes through the API client."""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend.api_client import ApiClient, ApiError, get_client
from frontend.run_view import ACTIVE_STATUSES

# How often a live view re-reads the API while a run is queued or running.
POLL_S = 2.0


def metrics_of(client: ApiClient, run: dict[str, Any]) -> dict[str, Any]:
    """The run's metrics; a final run's come from the cache."""
    if run.get("status") in ACTIVE_STATUSES:
        return client.run_metrics(run["id"])
    return _final_metrics(client.cache_key, run["id"], int(run.get("epochs_done") or 0))


@st.cache_data(ttl=600, max_entries=512, show_spinner=False)
def _final_metrics(cache_key: str, run_id: str, epochs_done: int) -> dict[str, Any]:
    # cache_key and epochs_done are only part of the key: another API or
    # credential, or a run that somehow grew, is another entry.
    del cache_key, epochs_done
    return get_client().run_metrics(run_id)


def dataset_names(client: ApiClient) -> dict[str, str]:
    """Dataset id → name; empty when the list cannot be read (names are a nicety)."""
    try:
        return {d["id"]: d.get("name") or d["id"] for d in client.list_datasets()}
    except ApiError:
        return {}
