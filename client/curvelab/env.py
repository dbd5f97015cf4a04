"""Where the client sends, as arguments or the environment say: one home for
the defaults that the callback, ``curvelab sync`` and the spool share."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_API_URL = "http://127.0.0.1:8000"
UI_PORT = 8501  # the Streamlit UI's port beside the API (curvelab up)


def api_url(url: str | None = None) -> str:
    """The API's base URL, without a trailing slash: the spool files are
    grouped by it, so one spelling per server."""
    value = url or os.environ.get("CURVELAB_API_URL") or DEFAULT_API_URL
    return value.strip().rstrip("/")


def api_token(token: str | None = None) -> str | None:
    return token or os.environ.get("CURVELAB_API_TOKEN") or None


def spool_dir(path: str | os.PathLike[str] | None = None) -> Path:
    value = path or os.environ.get("CURVELAB_SPOOL_DIR")
    if value:
        return Path(value).expanduser()
    return Path("~/.cache/curvelab/spool").expanduser()


def ui_url(api: str, ui: str | None = None) -> str:
    """The UI's base URL: given, CURVELAB_UI_URL, or the API's host on the UI's port."""
    value = ui or os.environ.get("CURVELAB_UI_URL")
    if value:
        return value.strip().rstrip("/")
    parts = urlsplit(api)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return urlunsplit((parts.scheme or "http", f"{host}:{UI_PORT}", "", "", ""))


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
