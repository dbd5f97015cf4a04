"""Overview: is the service healthy, which datasets and runs exist."""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend.api_client import ApiClient, ApiError, ApiUnreachable, get_client


def health_banner(client: ApiClient) -> bool:
    """Show the API's health; False when the page cannot go on without it."""
    try:
        health = client.health()
    except ApiUnreachable:
        st.error(
            f"The curvelab API at **{client.base_url}** is unreachable. "
            "Is `curvelab up` running? (The UI reads its address from `CURVELAB_API_URL`.)"
        )
        return False
    except ApiError as exc:
        st.error(f"The curvelab API at **{client.base_url}** answered with an error: {exc}")
        return False
    problems = [name for name in ("redis", "database") if not health.get(name)]
    workers = int(health.get("workers") or 0)
    if problems:
        st.error(f"The API is up, but cannot use: {', '.join(problems)}.")
    elif workers == 0:
        st.warning("The API is up, but no worker is connected: new runs wait in the queue.")
    else:
        st.success(f"API, Redis and database are up; {workers} worker(s) connected.")
    return True


def dataset_rows(datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": d.get("name"),
            "images": d.get("num_images"),
            "classes": len(d.get("classes") or []),
            "warnings": len(d.get("warnings") or []),
            "created": d.get("created_at"),
            "id": d.get("id"),
        }
        for d in datasets
    ]


def run_rows(runs: list[dict[str, Any]], datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = {d.get("id"): d.get("name") for d in datasets}
    return [
        {
            "name": r.get("name"),
            "status": r.get("status"),
            "epochs": f"{r.get('epochs_done', 0)} / {(r.get('config') or {}).get('epochs', '?')}",
            "dataset": names.get(r.get("dataset_id"), r.get("dataset_id")),
            "created": r.get("created_at"),
            "id": r.get("id"),
        }
        for r in runs
    ]


def main() -> None:
    st.title("curvelab")
    client = get_client()
    if not health_banner(client):
        return
    try:
        datasets = client.list_datasets()
        runs = client.list_runs()
    except ApiError as exc:
        st.error(f"Could not read from the API at **{client.base_url}**: {exc.detail}")
        return
    st.subheader("Datasets")
    if datasets:
        st.dataframe(dataset_rows(datasets), hide_index=True, width="stretch")
    else:
        st.info("No dataset yet. `curvelab demo` uploads a small one and starts a run.")
    st.subheader("Runs")
    if runs:
        st.dataframe(run_rows(runs, datasets), hide_index=True, width="stretch")
    else:
        st.info("No run yet.")
    st.button("Refresh")  # a click reruns the page, which reads the API again


main()
