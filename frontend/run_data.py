"""Reads the run pages share: metrics (cached once a run is final, since they
can no longer change) and dataset names. Every read goes through the API client."""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend.api_client import ApiClient, ApiError, get_client
from frontend.run_view import ACTIVE_STATUSES

# How often a live view re-reads the API while a run is queued or running.
POLL_S = 2.0
# The fewest batch points the API answers (backend/downsample.py MIN_POINTS).
MIN_POINTS = 10


def metrics_of(
    client: ApiClient, run: dict[str, Any], max_points: int | None = None
) -> dict[str, Any]:
    """The run's metrics (at most ``max_points`` batch points: the API's default
    when None); a final run's come from the cache."""
    if run.get("status") in ACTIVE_STATUSES:
        return client.run_metrics(run["id"], max_points)
    done = int(run.get("epochs_done") or 0)
    return _final_metrics(client.cache_key, run["id"], done, max_points)


@st.cache_data(ttl=600, max_entries=512, show_spinner=False)
def _final_metrics(
    cache_key: str, run_id: str, epochs_done: int, max_points: int | None
) -> dict[str, Any]:
    # cache_key and epochs_done are only part of the key: another API or
    # credential, or a run that somehow grew, is another entry.
    del cache_key, epochs_done
    return get_client().run_metrics(run_id, max_points)


def batch_budget(runs: int, total: int = 400) -> int:
    """Batch points per run when ``runs`` share a chart: ``total`` between them,
    never under the API's floor (backend/downsample.py's MIN_POINTS; the
    frontend does not import backend)."""
    return max(total // max(runs, 1), MIN_POINTS)


def dataset_names(client: ApiClient) -> dict[str, str]:
    """Dataset id → name; empty when the list cannot be read (names are a nicety)."""
    try:
        return {d["id"]: d.get("name") or d["id"] for d in client.list_datasets()}
    except ApiError:
        return {}
