"""Sign-in in a real browser (headless Debian chromium) against `curvelab up`
with the API token set: the UI process holds no token, a fresh browser sees
the sign-in form and nothing else, a wrong token is refused, the right one
shows the runs and datasets, sign-out (and a reload) returns to the form.

Screenshots go to a temporary folder ($CURVELAB_SCREENSHOTS keeps them).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.synthetic import write_character_zip
from tests.e2e.conftest import Stack, start_stack, stop_stack, wait_for_streamlit

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TOKEN = f"e2e-{secrets.token_urlsafe(24)}"
DATASET, RUN = "classified-glyphs", "classified-run"
TINY = {"image_size": [16, 16], "filters": [4], "epochs": 1, "batch_size": 8}


@pytest.fixture
def locked_ui_stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    """`curvelab up` as a team serves it: the API token set in its environment."""
    running = start_stack(tmp_path, redis_url, ui=True, environment={"CURVELAB_API_TOKEN": TOKEN})
    yield running
    stop_stack(running.process)


def ui_child(stack: Stack) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the Streamlit process `up` started."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
            environ = (proc / "environ").read_bytes().decode().split("\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == stack.process.pid and any(a.endswith("streamlit_app.py") for a in argv):
            return argv, dict(item.split("=", 1) for item in environ if "=" in item)
    raise AssertionError("no UI process under curvelab up")


def seen(page: Any) -> str:
    """All the page holds: its text and its HTML (attributes, hidden nodes)."""
    return str(page.locator("[data-testid='stApp']").inner_text()) + page.content()


def assert_only_the_form(page: Any, *secrets_: str) -> None:
    page.get_by_label("API token").wait_for()
    assert page.get_by_label("API token").get_attribute("type") == "password"
    everything = seen(page)
    assert "Sign in to curvelab" in everything
    for secret in secrets_:
        assert secret not in everything
    assert TOKEN not in everything
    assert page.locator("[data-testid='stApp'] img").count() == 0, "a thumbnail leaked"
    assert page.locator("[data-testid='stDataFrame']").count() == 0, "a table shown"
    assert page.locator("[data-testid='stSidebarNav']").count() == 0, "navigation shown"
    assert page.get_by_role("button", name="Sign out").count() == 0


def sign_in(page: Any, token: str) -> None:
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_a_stranger_sees_the_form_and_a_member_sees_everything(
    locked_ui_stack: Stack, browser_page: Any, screenshots: Path, tmp_path: Path
) -> None:
    page, ui = browser_page, locked_ui_stack.ui_url
    api = locked_ui_stack.client()
    archive = write_character_zip(
        tmp_path / "glyphs.zip", num_classes=2, per_class=12, image_size=(16, 16), mode="L"
    )
    with archive.open("rb") as handle:
        reply = api.post(
            "/api/datasets", files={"file": (archive.name, handle)}, data={"name": DATASET}
        )
    assert reply.status_code == 201, reply.text
    dataset = reply.json()
    classes = [c["name"] for c in dataset["classes"]]
    reply = api.post("/api/runs", json={"dataset_id": dataset["id"], "config": TINY, "name": RUN})
    assert reply.status_code == 201, reply.text
    run_id = reply.json()["id"]
    secret_words = (DATASET, RUN, *classes)

    # 0. The UI process has no token to give away; its picker follows the API's cap.
    argv, environ = ui_child(locked_ui_stack)
    assert "CURVELAB_API_TOKEN" not in environ and TOKEN not in environ.values()
    assert argv[argv.index("--server.maxUploadSize") + 1] == "1024"

    # 1. A fresh browser, on any page, a deep link included: the form, nothing else.
    for path in ("/", "/datasets", f"/datasets?id={dataset['id']}", f"/run?id={run_id}"):
        page.goto(f"{ui}{path}")
        wait_for_streamlit(page)
        assert_only_the_form(page, *secret_words)
    page.screenshot(path=str(screenshots / "signin.png"), full_page=True)

    # 2. A wrong token: refused, in words; still nothing shown.
    sign_in(page, "not-the-token")
    page.get_by_text("The API refused this token").wait_for(timeout=30_000)
    assert_only_the_form(page, *secret_words)
    page.screenshot(path=str(screenshots / "signin-refused.png"), full_page=True)

    # 3. The right token: the deep link opens, then every page shows its data.
    sign_in(page, TOKEN)
    page.get_by_role("heading", name=RUN).wait_for(timeout=30_000)
    # Until the run ends, the form the user typed into stays in the DOM (stale);
    # once it ends, nothing on the page holds the token.
    wait_for_streamlit(page)
    assert TOKEN not in page.url and TOKEN not in seen(page)
    page.get_by_role("link", name="Runs").click()
    page.locator("[data-testid='stDataFrame']").wait_for(timeout=30_000)
    wait_for_streamlit(page)
    assert RUN in seen(page)  # the table's cells (its accessible copy, beside the canvas)
    page.get_by_role("link", name="Datasets").click()
    page.get_by_role("heading", name=DATASET).wait_for(timeout=30_000)
    page.locator("[data-testid='stMain'] img").first.wait_for(timeout=30_000)  # thumbnails
    assert "up to 1024 MB" in seen(page)
    page.screenshot(path=str(screenshots / "signed-in-datasets.png"), full_page=True)
    # Kept in this browser session only: no cookie or storage holds it.
    stored = page.evaluate("() => JSON.stringify([localStorage, sessionStorage])")
    assert TOKEN not in stored
    assert all(TOKEN not in c["value"] for c in page.context.cookies())

    # 4. Sign out: back to the form, with nothing left of the data.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("Signed out").wait_for(timeout=30_000)
    assert_only_the_form(page, *secret_words)

    # 5. A reload is a new session, which signs in again.
    sign_in(page, TOKEN)
    page.get_by_role("button", name="Sign out").wait_for(timeout=30_000)
    page.reload()
    wait_for_streamlit(page)
    assert_only_the_form(page, *secret_words)
