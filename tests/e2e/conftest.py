"""The whole stack as a user starts it: ``curvelab up`` in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, stop_process, wait_for


@dataclass
class Stack:
    api_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    ui_url: str | None = None
    token: str | None = None  # the API's CURVELAB_API_TOKEN, when it has one

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=30)


def _healthy_with_worker(api_url: str) -> bool:
    try:
        body = httpx.get(f"{api_url}/api/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return body.get("status") == "ok" and body.get("workers", 0) >= 1


def start_stack(
    tmp_path: Path,
    redis_url: str,
    *extra: str,
    ui: bool = False,
    environment: Mapping[str, str] | None = None,
    api_port: int | None = None,
) -> Stack:
    """``environment``: CURVELAB_* settings for `curvelab up`, e.g. the API token;
    ``api_port``: a fixed port, to start the stack again where a client knows it."""
    port = api_port or free_port()
    ui_port = free_port()
    data_dir = tmp_path / "stack-data"
    log = tmp_path / "curvelab-up.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURVELAB_")}
    env.update(environment or {})
    command = [
        sys.executable,
        "-m",
        "backend.cli.main",
        "up",
        *(["--ui-port", str(ui_port)] if ui else ["--no-ui"]),
        "--data-dir",
        str(data_dir),
        "--api-port",
        str(port),
        "--redis-url",
        redis_url,
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    api_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: _healthy_with_worker(api_url) or process.poll() is not None,
            timeout=120,
            interval=0.5,
            what="curvelab up to be healthy with a worker",
        )
    except AssertionError:
        stop_stack(process)
        raise AssertionError(log.read_text()[-4000:]) from None
    if process.poll() is not None:
        raise AssertionError(f"curvelab up exited:\n{log.read_text()[-4000:]}")
    ui_url = f"http://127.0.0.1:{ui_port}" if ui else None
    if ui_url:
        wait_for(
            lambda: _answers(f"{ui_url}/_stcore/health"),
            timeout=60,
            interval=0.5,
            what="the UI to answer",
        )
    token = env.get("CURVELAB_API_TOKEN") or None
    return Stack(api_url, data_dir, process, log, ui_url=ui_url, token=token)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop_stack(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, signal.SIGINT)  # Ctrl-C, as a user stops it


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    running = start_stack(tmp_path, redis_url)
    yield running
    stop_stack(running.process)


@pytest.fixture
def ui_stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    """The whole app, UI included, as `make run` starts it."""
    running = start_stack(tmp_path, redis_url, ui=True)
    yield running
    stop_stack(running.process)


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the browser tests leave their screenshots (a temporary folder, or
    $CURVELAB_SCREENSHOTS to keep them and look)."""
    folder = Path(os.environ.get("CURVELAB_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A headless Debian chromium page at 1400×900, driven by Playwright."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; `make test` installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        yield page
        browser.close()


def wait_for_streamlit(page: Any, timeout_ms: int = 30_000) -> None:
    """Until the script has run: Streamlit reads "notRunning" before its first
    run starts too, so first wait for the app element, then for idle."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    page.wait_for_timeout(300)
    page.wait_for_selector(
        "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout_ms
    )
