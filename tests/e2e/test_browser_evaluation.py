"""What the model learned, in a real browser (headless Debian chromium, 1400×900)
against `curvelab up`: a 10-class run trains, its page shows the confusion
heatmap with every class on both axes, the per-class table and the mistakes,
nothing wider than the window; an image tried on it gets its class back from
the predict worker `curvelab up` started.

Screenshots go to a temporary folder ($CURVELAB_SCREENSHOTS keeps them).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.synthetic import write_character_zip
from tests.conftest import wait_for
from tests.e2e.conftest import Stack, wait_for_streamlit

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

WIDTH = 1400
TINY = {
    "image_size": [32, 32],
    "color_mode": "grayscale",
    "filters": [8, 16],
    "convs_per_block": 1,
    "dense_units": 32,
    "bn_momentum": 0.9,
    "batch_size": 16,
    "epochs": 15,
    "learning_rate": 0.003,
    "gap_probes": False,
}


def _within_the_window(page: Any, selector: str) -> None:
    for box in (
        page.locator(selector).nth(i).bounding_box() for i in range(page.locator(selector).count())
    ):
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, (
            selector,
            box,
        )


def test_the_run_page_shows_what_the_model_learned(
    ui_stack: Stack, browser_page: Any, screenshots: Path, tmp_path: Path
) -> None:
    page, ui = browser_page, ui_stack.ui_url
    api = httpx.Client(base_url=ui_stack.api_url, timeout=60)
    archive = write_character_zip(
        tmp_path / "ten.zip", num_classes=10, per_class=40, image_size=(32, 32), mode="L"
    )
    with archive.open("rb") as handle:
        dataset = api.post("/api/datasets", files={"file": ("ten.zip", handle)}).json()
    classes = [c["name"] for c in dataset["classes"]]
    run = api.post("/api/runs", json={"dataset_id": dataset["id"], "config": TINY}).json()
    wait_for(
        lambda: api.get(f"/api/runs/{run['id']}").json()["status"] in ("succeeded", "failed"),
        timeout=300,
        interval=1,
        what="the run to train",
    )
    evaluation = api.get(f"/api/runs/{run['id']}/evaluation").json()
    assert len(evaluation["confusion"]) == 10, evaluation

    page.goto(f"{ui}/run?id={run['id']}")
    wait_for_streamlit(page)
    page.get_by_text("What the model learned").scroll_into_view_if_needed()
    heatmap = page.locator("[class*='st-key-confusion'] .js-plotly-plot")
    heatmap.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    ticks = heatmap.locator(".xtick text").all_text_contents()
    assert ticks == classes, ticks
    # Down the rows, first class at the top (plotly lists a reversed axis' ticks bottom up).
    assert sorted(heatmap.locator(".ytick text").all_text_contents()) == sorted(classes)
    _within_the_window(page, "[class*='st-key-confusion'] .js-plotly-plot")
    heatmap.scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "evaluation-1-confusion.png", full_page=True)

    page.get_by_role("tab", name="Per class").click()
    page.wait_for_timeout(1000)
    _within_the_window(page, "[data-testid='stDataFrame']")
    page.screenshot(path=screenshots / "evaluation-2-per-class.png", full_page=True)

    page.get_by_role("tab", name="Most confident mistakes").click()
    page.wait_for_timeout(1500)
    shown = page.locator("[data-testid='stImage'] img")
    assert shown.count() == len(evaluation["mistakes"])
    for i in range(shown.count()):
        assert shown.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    _within_the_window(page, "[data-testid='stImage']")
    page.screenshot(path=screenshots / "evaluation-3-mistakes.png", full_page=True)

    # A training image of the first class, tried through the page.
    with zipfile.ZipFile(archive) as opened:
        name = next(n for n in opened.namelist() if n.startswith(f"{classes[0]}/") and "." in n)
        (tmp_path / "mine.png").write_bytes(opened.read(name))
    page.get_by_role("tab", name="Try an image").click()
    page.locator("[class*='st-key-try-'] input[type='file']").set_input_files(
        str(tmp_path / "mine.png")
    )
    bars = page.locator("[class*='st-key-prediction-'] .js-plotly-plot")
    bars.wait_for(timeout=120_000)
    page.wait_for_timeout(1000)
    _within_the_window(page, "[class*='st-key-prediction-'] .js-plotly-plot")
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=screenshots / "evaluation-4-try.png", full_page=True)
    answer = api.post(
        f"/api/runs/{run['id']}/predict",
        files={"file": ("mine.png", io.BytesIO((tmp_path / "mine.png").read_bytes()))},
    ).json()
    assert classes[0] in [t["name"] for t in answer["top"]], answer
    best = answer["top"][0]
    shown = page.locator("[data-testid='stMain']").inner_text()
    assert f"{best['name']} ({best['probability']:.1%}), with the best epoch" in shown
