"""The command line and environment of each part: API, worker, UI.

One place for them, used both by ``curvelab up`` (which supervises all three)
and by ``curvelab api|worker|ui`` (which runs one in the foreground), so the
two ways of starting a part can never drift apart.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from backend.queue import QUEUE

# Hosts that mean "every interface": a client must use loopback instead.
ANY_HOST = {"", "0.0.0.0", "::"}


def http_url(host: str, port: int) -> str:
    """The URL a client on this machine uses to reach a server bound to ``host``."""
    if host in ANY_HOST:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def child_env(*, data_dir: Path, redis_url: str, api_url: str) -> dict[str, str]:
    """Our environment (every CURVELAB_* the user set included) plus the settings
    this command decided, which take precedence."""
    env = dict(os.environ)
    env.update(
        CURVELAB_DATA_DIR=str(data_dir),
        CURVELAB_REDIS_URL=redis_url,
        CURVELAB_API_URL=api_url,
        # Log lines reach the log file as they happen, not when a buffer fills.
        PYTHONUNBUFFERED="1",
    )
    return env


# All the UI process is told of curvelab's settings: where the API is. Never
# the API token (a person signs in with it), nor the database or Redis URLs
# (their passwords): the UI holds no power of its own.
UI_SETTINGS = frozenset({"CURVELAB_API_URL"})


def ui_env(env: Mapping[str, str], *, api_url: str) -> dict[str, str]:
    """The UI's environment: ``env`` less every CURVELAB_* setting but the
    API's address, which is ``api_url``."""
    kept = {
        key: value
        for key, value in env.items()
        if not key.startswith("CURVELAB_") or key in UI_SETTINGS
    }
    kept.update(CURVELAB_API_URL=api_url, PYTHONUNBUFFERED="1")
    return kept


# Uvicorn waits for open responses before it exits, and an SSE stream never
# ends by itself: past this, on SIGTERM, they are cut (their clients reconnect
# with Last-Event-ID) instead of the restart hanging until a SIGKILL.
API_GRACEFUL_S = 3


def api_argv(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "backend.api.main:create_app",
        "--timeout-graceful-shutdown",
        str(API_GRACEFUL_S),
        "--host",
        host,
        "--port",
        str(port),
    ]


def worker_argv(node: str | None = None) -> list[str]:
    """``node``: the Celery node name (``worker2@%h``): several workers on one
    host need distinct ones (their heartbeats are keyed by it)."""
    # solo pool, one task at a time: TensorFlow is never forked after import
    # (tensorflow#57877), and a worker holds one GPU's memory for one run.
    named = [f"--hostname={node}"] if node else []
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app:app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={QUEUE}",
        *named,
        "--loglevel=INFO",
    ]


def worker_names(count: int) -> list[str]:
    """The supervisor's names of ``count`` training workers, which are their
    log files' names too: worker (worker.log), worker2, worker3, ..."""
    return ["worker" if i == 1 else f"worker{i}" for i in range(1, count + 1)]


def streamlit_app_path() -> Path:
    """Where ``frontend/streamlit_app.py`` is installed, found without importing
    any frontend code into this process."""
    spec = importlib.util.find_spec("frontend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the frontend package is not installed (pip install curvelab)")
    path = Path(next(iter(spec.submodule_search_locations))) / "streamlit_app.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed frontend package")
    return path


def ui_argv(host: str, port: int, *, max_upload_mb: int) -> list[str]:
    """``max_upload_mb``: the API's upload cap (Settings.max_upload_mb), so the
    UI's file picker takes what the API takes, and the page says so."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(streamlit_app_path()),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # A served app, not a dev session: reloading modules on file changes
        # would leave the cached API client holding the old module's classes.
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",  # no "Deploy" button in a self-hosted app
        "--server.maxUploadSize",
        str(max_upload_mb),
    ]
