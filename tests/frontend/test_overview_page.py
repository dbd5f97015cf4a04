"""The Overview page through streamlit's AppTest: a banner, never a traceback,
when the API is down; the tables when a (stub) API answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from frontend.api_client import get_client
from tests.conftest import free_port

PAGE = Path(__file__).resolve().parents[2] / "frontend" / "app_pages" / "overview.py"

ANSWERS: dict[str, Any] = {
    "/api/health": {"status": "ok", "redis": True, "database": True, "workers": 1},
    "/api/datasets": [
        {
            "id": "d1",
            "name": "letters",
            "num_images": 120,
            "classes": [{"name": "a", "count": 60}, {"name": "b", "count": 60}],
            "warnings": [],
            "created_at": "2025-01-01T00:00:00Z",
        }
    ],
    "/api/runs": [
        {
            "id": "r1",
            "name": "demo",
            "status": "running",
            "epochs_done": 3,
            "dataset_id": "d1",
            "config": {"epochs": 10},
            "created_at": "2025-01-01T00:01:00Z",
        }
    ],
}


class _StubApi(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(ANSWERS.get(self.path, {"detail": "Not Found"})).encode()
        self.send_response(200 if self.path in ANSWERS else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def fresh_client() -> Iterator[None]:
    get_client.clear()  # the client is cached per process; each test has its own URL
    yield
    get_client.clear()


@pytest.fixture
def stub_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_unreachable_api_is_a_banner(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CURVELAB_API_URL", url)
    page = AppTest.from_file(str(PAGE), default_timeout=30).run()
    assert not page.exception
    assert len(page.error) == 1
    assert url in page.error[0].value and "curvelab up" in page.error[0].value
    assert len(page.dataframe) == 0


def test_the_tables_show_datasets_and_runs(monkeypatch: pytest.MonkeyPatch, stub_api: str) -> None:
    monkeypatch.setenv("CURVELAB_API_URL", stub_api)
    page = AppTest.from_file(str(PAGE), default_timeout=30).run()
    assert not page.exception
    assert not page.error
    assert "1 worker(s)" in page.success[0].value
    datasets, runs = (frame.value for frame in page.dataframe)
    assert datasets.iloc[0]["name"] == "letters" and datasets.iloc[0]["classes"] == 2
    assert runs.iloc[0]["status"] == "running"
    assert runs.iloc[0]["epochs"] == "3 / 10"
    assert runs.iloc[0]["dataset"] == "letters"


def test_the_app_opens_on_the_overview(monkeypatch: pytest.MonkeyPatch, stub_api: str) -> None:
    monkeypatch.setenv("CURVELAB_API_URL", stub_api)
    app = AppTest.from_file(str(PAGE.parents[1] / "streamlit_app.py"), default_timeout=30).run()
    assert not app.exception
    assert app.title[0].value == "curvelab"
    assert len(app.dataframe) == 2
