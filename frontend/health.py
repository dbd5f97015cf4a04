"""The banner every page shows first: is the API there, and can it do its work?

A healthy API earns only a small sidebar caption, so pages stay uncluttered;
anything that would make a page fail says so in words instead of a traceback.
It also tells the app whether this session must sign in first: then nothing
else is shown, not even the health details.
"""

from __future__ import annotations

from typing import Literal

import streamlit as st

from frontend.api_client import ApiClient, ApiError, ApiUnreachable

# "ok": pages can run; "sign-in": the API wants a token this session has not
# given (nothing was shown); "down": what is wrong was shown, no page can run.
Access = Literal["ok", "sign-in", "down"]


def health_banner(client: ApiClient) -> Access:
    """Show what is wrong with the API, if anything, and whether pages may run."""
    try:
        health = client.health()
        # Health is open to all; a cheap protected read tells whether this
        # session's credential (or none, on an open API) is enough.
        client.list_presets()
    except ApiUnreachable:
        st.error(
            f"The curvelab API at **{client.base_url}** is unreachable. "
            "Is `curvelab up` running? The UI reads the API's address from `CURVELAB_API_URL`."
        )
        return "down"
    except ApiError as exc:
        if exc.status == 401:
            return "sign-in"
        st.error(f"The curvelab API at **{client.base_url}** answered: {exc.detail}")
        return "down"

    down = [part for part in ("redis", "database") if not health.get(part)]
    workers = int(health.get("workers") or 0)
    if down:
        # Pages can still show what they read; say why writes and live curves fail.
        st.error(f"The API is up, but cannot reach: {', '.join(down)}. Runs cannot start now.")
    elif workers == 0:
        st.warning("No worker is connected: new runs wait in the queue until one starts.")
    st.sidebar.caption(f"API {client.base_url} · {workers} worker{'s' if workers != 1 else ''}")
    return "ok"
