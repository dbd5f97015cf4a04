"""The banner every page shows first: is the API there, and can it do its work?

A healthy API earns only a small sidebar caption, so pages stay uncluttered;
anything that would make a page fail says so in words instead of a traceback.
"""

from __future__ import annotations

import streamlit as st

from frontend.api_client import ApiClient, ApiError, ApiUnreachable


def health_banner(client: ApiClient) -> bool:
    """Show what is wrong with the API, if anything; False when no page can work."""
    try:
        health = client.health()
        # Health is open to all; a cheap protected read tells whether our token works.
        client.list_presets()
    except ApiUnreachable:
        st.error(
            f"The curvelab API at **{client.base_url}** is unreachable. "
            "Is `curvelab up` running? The UI reads the API's address from `CURVELAB_API_URL`."
        )
        return False
    except ApiError as exc:
        if exc.status == 401:
            st.error(
                f"The curvelab API at **{client.base_url}** refused the UI's token. "
                "Set `CURVELAB_API_TOKEN` to the API's token and restart the UI."
            )
        else:
            st.error(f"The curvelab API at **{client.base_url}** answered: {exc.detail}")
        return False

    down = [part for part in ("redis", "database") if not health.get(part)]
    workers = int(health.get("workers") or 0)
    if down:
        # Pages can still show what they read; say why writes and live curves fail.
        st.error(f"The API is up, but cannot reach: {', '.join(down)}. Runs cannot start now.")
    elif workers == 0:
        st.warning("No worker is connected: new runs wait in the queue until one starts.")
    st.sidebar.caption(f"API {client.base_url} · {workers} worker{'s' if workers != 1 else ''}")
    return True
