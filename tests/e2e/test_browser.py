"""A new user in a real browser (headless Debian chromium) against `curvelab up`:
uploads a generated dataset through the page's file input, starts a tiny run
from the form, watches its chart gain points, opens the compare view.

Screenshots go to a temporary folder ($CURVELAB_SCREENSHOTS keeps them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.synthetic import write_character_zip
from tests.conftest import wait_for
from tests.e2e.conftest import Stack, wait_for_streamlit

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def no_exception(page: Any) -> None:
    """A page that raised shows Streamlit's exception box; none may."""
    assert page.locator("[data-testid='stException']").count() == 0, page.url


LOSS_CHARTS = "[class*='st-key-loss'] .js-plotly-plot"


def loss_points(page: Any) -> list[int]:
    """The markers each loss chart on the page draws, one count per chart.

    While Streamlit reruns, the chart of the previous run can stay in the DOM
    (stale) beside the new one: counting markers over the whole page then adds
    both charts' points, so a count is read only where one chart is drawn."""
    counts: list[int] = page.evaluate(
        """(selector) => Array.from(document.querySelectorAll(selector)).map(
            (chart) => chart.querySelectorAll('.scatterlayer .trace .points path').length)""",
        LOSS_CHARTS,
    )
    return counts


def test_a_new_user_uploads_trains_watches_and_compares(
    ui_stack: Stack, browser_page: Any, screenshots: Path, tmp_path: Path
) -> None:
    page, ui = browser_page, ui_stack.ui_url
    api = httpx.Client(base_url=ui_stack.api_url, timeout=30)
    archive = write_character_zip(
        tmp_path / "glyphs.zip", num_classes=3, per_class=60, image_size=(32, 32), mode="L"
    )

    # 1. Upload through the page's file input.
    page.goto(f"{ui}/datasets")
    wait_for_streamlit(page)
    page.locator("input[type='file']").set_input_files(str(archive))
    page.get_by_role("textbox", name="Name (optional)").fill("browser glyphs")
    page.get_by_role("button", name="Upload", exact=True).last.click()
    page.get_by_text(re.compile(r"Added .browser glyphs.")).wait_for(timeout=60_000)
    page.get_by_text("Samples").wait_for()
    wait_for_streamlit(page)
    page.wait_for_timeout(1500)  # thumbnails and chart finish drawing
    no_exception(page)
    page.screenshot(path=screenshots / "1-datasets.png")
    datasets = api.get("/api/datasets").json()
    assert [(d["name"], d["num_images"]) for d in datasets] == [("browser glyphs", 180)]
    dataset_id = datasets[0]["id"]

    # 2. A tiny run from the form: the "tiny" preset, then 3 epochs.
    page.goto(f"{ui}/new-run?dataset={dataset_id}")
    wait_for_streamlit(page)
    page.get_by_label("Start from a preset").click()
    page.get_by_role("option", name="tiny", exact=True).click()
    wait_for_streamlit(page)
    page.get_by_role("spinbutton", name="Epochs").fill("3")
    page.get_by_role("spinbutton", name="Learning rate").fill("0.003")
    page.get_by_role("textbox", name="Run name (optional)").fill("from the form")
    no_exception(page)
    page.screenshot(path=screenshots / "2-new-run.png")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"/run\?id=[0-9a-f]{32}"), timeout=30_000)
    run_id = page.url.rsplit("=", 1)[1]
    run = api.get(f"/api/runs/{run_id}").json()
    assert run["name"] == "from the form"
    assert run["config"]["epochs"] == 3 and run["config"]["learning_rate"] == 0.003

    # 3. The run page: the config beside a chart that grows while it trains.
    wait_for_streamlit(page)
    shown = page.locator("[data-testid='stMain']").inner_text()
    assert "adam" in shown and "0.003" in shown
    seen: list[int] = []
    both: list[list[int]] = []  # reads with more than one chart in the DOM

    def more_points() -> bool:
        counts = loss_points(page)
        if len(counts) != 1:
            both.append(counts)
        elif not seen or counts[0] > seen[-1]:
            seen.append(counts[0])
        return api.get(f"/api/runs/{run_id}").json()["status"] == "succeeded" and len(seen) >= 2

    wait_for(more_points, timeout=180, interval=0.5, what="the chart to grow")
    assert seen[-1] > seen[0], (seen, both)
    # The final chart: every epoch and batch point the API stored, and at least
    # every point the live chart showed (the page redraws once the run is final).
    stored = api.get(f"/api/runs/{run_id}/metrics").json()
    expected = len(stored["batches"]) + 2 * len(stored["epochs"])
    final = wait_for(
        lambda: (counts := loss_points(page)) == [expected] and counts,
        timeout=60,
        interval=0.5,
        what=f"one loss chart with the run's {expected} points (seen {seen}, {both})",
    )
    assert final[0] >= seen[-1], (final, seen, both)
    wait_for_streamlit(page)
    no_exception(page)
    page.screenshot(path=screenshots / "3-run.png")

    # 4. A second run, then both overlaid with their differing settings.
    other = api.post(
        "/api/runs",
        json={
            "dataset_id": dataset_id,
            "name": "bn 0.99",
            "config": {**run["config"], "bn_momentum": 0.99},
        },
    ).json()
    wait_for(
        lambda: api.get(f"/api/runs/{other['id']}").json()["status"] == "succeeded",
        timeout=180,
        interval=0.5,
        what="the second run",
    )
    page.goto(f"{ui}/compare?ids={run_id},{other['id']}")
    wait_for_streamlit(page)
    # Table cells are drawn on a canvas; their text is in hidden grid cells.
    page.get_by_text("bn_momentum").first.wait_for(state="attached", timeout=30_000)
    page.wait_for_timeout(1500)
    body = page.locator("[data-testid='stMain']").text_content() or ""
    assert "from the form" in body and "bn 0.99" in body
    assert "0.99" in body and "0.9" in body
    traces = page.locator("[class*='st-key-compare-loss'] .js-plotly-plot .scatterlayer .trace")
    assert traces.count() >= 4, traces.count()  # train and validation, for each run
    no_exception(page)
    page.screenshot(path=screenshots / "4-compare.png")

    # 5. The runs list, the default page, lists both.
    page.goto(ui)
    wait_for_streamlit(page)
    page.get_by_text("bn 0.99").first.wait_for(state="attached", timeout=30_000)
    no_exception(page)
    page.screenshot(path=screenshots / "5-runs.png")
