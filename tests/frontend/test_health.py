"""The health banner: a sentence that says what to do, never a traceback;
quiet (a sidebar caption) when all is well."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from frontend.api_client import ApiClient, shared_client
from tests.conftest import free_port
from tests.frontend.conftest import FRONTEND, LiveApi, open_app_page

HEALTHY = {"status": "ok", "redis": True, "database": True, "workers": 1}


@pytest.fixture(autouse=True)
def fresh_client() -> Iterator[None]:
    shared_client.clear()  # the client is cached per process; each test has its own URL
    yield
    shared_client.clear()


def banner(health: dict[str, Any], health_status: int = 200, presets_status: int = 200) -> AppTest:
    """The banner over a stub API, then a line that shows whether the page went on."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/health":
            return httpx.Response(health_status, json=health)
        return httpx.Response(presets_status, json={"detail": "nope"} if presets_status else [])

    client = ApiClient("http://api.test", transport=httpx.MockTransport(answer))

    def script(client) -> None:  # runs as its own script: no outside names
        import streamlit as st

        from frontend.health import health_banner

        st.text(f"page runs: {health_banner(client)}")

    return AppTest.from_function(script, args=(client,), default_timeout=30).run()


def test_an_unreachable_api_names_its_url_and_stops_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CURVELAB_API_URL", url)
    app = AppTest.from_file(str(FRONTEND / "streamlit_app.py"), default_timeout=30).run()
    assert not app.exception
    assert len(app.error) == 1
    message = app.error[0].value
    assert url in message and "curvelab up" in message and "CURVELAB_API_URL" in message
    assert not app.title  # st.stop(): no page ran


def test_healthy_is_only_a_caption() -> None:
    page = banner(HEALTHY)
    assert not page.exception and not page.error and not page.warning
    assert page.text[0].value == "page runs: ok"
    assert "1 worker" in page.sidebar.caption[0].value


def test_no_worker_warns_that_runs_wait() -> None:
    page = banner({**HEALTHY, "workers": 0})
    assert "wait in the queue" in page.warning[0].value
    assert page.text[0].value == "page runs: ok"


def test_redis_down_is_an_error_but_pages_go_on() -> None:
    page = banner({**HEALTHY, "status": "degraded", "redis": False, "workers": 0}, 503)
    assert "redis" in page.error[0].value
    assert page.text[0].value == "page runs: ok"


def test_an_api_that_wants_a_token_asks_for_sign_in_and_shows_nothing() -> None:
    page = banner({**HEALTHY, "workers": 0}, presets_status=401)
    assert page.text[0].value == "page runs: sign-in"
    # Not even the health details: the sign-in form is all a stranger sees.
    assert not page.error and not page.warning and not page.sidebar.caption


def test_a_live_api_without_workers_shows_the_page(live_api: LiveApi) -> None:
    page = open_app_page("datasets")
    assert not page.exception
    assert "wait in the queue" in page.warning[0].value
    assert page.title[0].value == "Datasets"
