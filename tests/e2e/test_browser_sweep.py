"""A sweep from launch to ranked results, in a real browser (headless Debian
chromium, 1400×900) against ``curvelab up --workers 2``: a tiny run built to
lag (BatchNorm momentum 0.99 over a few steps an epoch, a fast learning rate)
gets that diagnosis; "Try every suggestion" opens the sweep's page, which
follows the runs while two train at once and ends with them ranked by their
best val_loss, the parallel coordinates and the best runs' curves drawn.

Screenshots go to a temporary folder ($CURVELAB_SCREENSHOTS keeps them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.synthetic import write_character_zip
from frontend.sweep_view import TOP_CURVES
from tests.conftest import wait_for
from tests.e2e.conftest import Stack, start_stack, stop_stack, wait_for_streamlit
from tests.e2e.test_browser import no_exception

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# Nine steps an epoch (144 training images, batches of 16): after three epochs
# Keras's 0.99 moving averages still hold most of their initial values, which
# the run's probes measure as a gap that re-estimated statistics close.
LAGGING = {
    "image_size": [32, 32],
    "color_mode": "grayscale",
    "filters": [4, 8],
    "convs_per_block": 1,
    "dense_units": 16,
    "bn_momentum": 0.99,
    "batch_size": 16,
    "epochs": 3,
    "learning_rate": 0.01,
    "batch_metrics_every": 3,
}
BN_LAG_TITLE = "BatchNorm's moving averages lag behind the model"
# A loaded two-core machine trains each tiny run in well under this.
TRAIN_S = 300


def _workers(api_url: str) -> int:
    try:
        return int(httpx.get(f"{api_url}/api/health", timeout=2).json().get("workers", 0))
    except (httpx.HTTPError, ValueError):
        return 0


@pytest.fixture
def sweep_stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    """The whole app, UI included, with two training workers."""
    running = start_stack(tmp_path, redis_url, "--workers", "2", ui=True)
    try:
        # Both heartbeats, so that the sweep's first two runs start together.
        wait_for(
            lambda: _workers(running.api_url) >= 2, timeout=120, interval=0.5, what="two workers"
        )
        yield running
    finally:
        stop_stack(running.process)


@pytest.fixture
def api(sweep_stack: Stack) -> Iterator[httpx.Client]:
    with sweep_stack.client() as client:
        yield client


def table_rows(page: Any, selector: str) -> list[list[str]]:
    """A dataframe's rows as text, header first. Its cells are drawn on a
    canvas; glide-data-grid keeps their text in a hidden accessible table."""
    rows: list[list[str]] = page.evaluate(
        """(selector) => {
            const grid = document.querySelector(selector);
            if (!grid) return [];
            return Array.from(grid.querySelectorAll('table tr')).map(
                (row) => Array.from(row.querySelectorAll('th, td')).map(
                    (cell) => (cell.textContent || '').trim()));
        }""",
        selector,
    )
    return rows


def column(rows: list[list[str]], name: str) -> list[str]:
    """One column's cells, top to bottom, by its header."""
    if not rows or name not in rows[0]:
        return []
    index = rows[0].index(name)
    return [row[index] for row in rows[1:] if len(row) > index]


def trace_counts(page: Any, selector: str) -> list[int]:
    """The traces each plotly chart under ``selector`` holds (its div's data)."""
    counts: list[int] = page.evaluate(
        """(selector) => Array.from(document.querySelectorAll(selector)).map(
            (chart) => (chart.data || []).length)""",
        selector,
    )
    return counts


def lagging_run(api: httpx.Client, tmp_path: Path) -> dict[str, Any]:
    archive = write_character_zip(
        tmp_path / "glyphs.zip", num_classes=3, per_class=60, image_size=(32, 32), mode="L"
    )
    with archive.open("rb") as handle:
        reply = api.post("/api/datasets", files={"file": ("glyphs.zip", handle, "application/zip")})
    assert reply.status_code == 201, reply.text
    reply = api.post(
        "/api/runs", json={"dataset_id": reply.json()["id"], "name": "lagging", "config": LAGGING}
    )
    assert reply.status_code == 201, reply.text
    run_id = reply.json()["id"]
    run = wait_for(
        lambda: (
            (body := api.get(f"/api/runs/{run_id}").json())["status"]
            in ("succeeded", "failed", "cancelled")
            and body
        ),
        timeout=TRAIN_S,
        interval=1,
        what="the lagging run to train",
    )
    assert run["status"] == "succeeded", run
    return dict(run)


def test_try_every_suggestion_sweeps_and_ranks_in_the_browser(
    sweep_stack: Stack, api: httpx.Client, browser_page: Any, screenshots: Path, tmp_path: Path
) -> None:
    page, ui = browser_page, sweep_stack.ui_url
    run = lagging_run(api, tmp_path)
    findings = api.get(f"/api/runs/{run['id']}/diagnosis").json()["findings"]
    lag = next((f for f in findings if f["code"] == "batchnorm_lag"), None)
    assert lag is not None and lag["suggestion"].get("bn_momentum"), findings

    # 1. The run page: the finding, its suggestion, and one button for them all.
    page.goto(f"{ui}/run?id={run['id']}")
    wait_for_streamlit(page)
    page.get_by_text(BN_LAG_TITLE).first.wait_for(timeout=30_000)
    suggested = f"bn_momentum: 0.99 → {lag['suggestion']['bn_momentum']:g}"
    page.get_by_text(suggested).first.wait_for(timeout=30_000)
    button = page.get_by_role("button", name="Try every suggestion")
    button.scroll_into_view_if_needed()
    no_exception(page)
    page.screenshot(path=screenshots / "sweep-1-diagnosis.png")
    button.click()

    # 2. The sweep's page opens on the sweep just made, while its runs train.
    page.wait_for_url(re.compile(r"/sweep\?id=[0-9a-f]{32}$"), timeout=60_000)
    sweep_id = page.url.rsplit("=", 1)[1]
    sweep = api.get(f"/api/sweeps/{sweep_id}").json()
    assert (sweep["source_run_id"], sweep["method"]) == (run["id"], "list"), sweep
    # The run's config as it was, its lag's patch, and any other finding's.
    variants = {variant["label"]: variant["patch"] for variant in sweep["variants"]}
    # Each variant (its run's name) says its change and the finding it answers.
    lag_label = f"bn_momentum={lag['suggestion']['bn_momentum']:g} · batchnorm_lag"
    assert variants["original"] == {} and variants[lag_label] == lag["suggestion"], variants
    labels = list(variants)
    wait_for_streamlit(page)
    main = page.locator("[data-testid='stMain']")
    page.get_by_text(f"Suggestions for {run['name']}").first.wait_for(timeout=30_000)
    first_drawn = main.inner_text()
    table = "[data-testid='stMain'] [data-testid='stDataFrame']"

    def training_or_done() -> bool:
        shown = column(table_rows(page, table), "status")
        finished = api.get(f"/api/sweeps/{sweep_id}").json()["status"] != "running"
        return "running" in shown or finished

    # Mid-way, when the page is quick enough to catch it (the runs are tiny).
    wait_for(training_or_done, timeout=TRAIN_S, interval=0.5, what="a sweep run to train")
    no_exception(page)
    page.screenshot(path=screenshots / "sweep-2-training.png")

    # 3. Finished (the API says so), the page follows without a reload.
    def finished() -> dict[str, Any] | None:
        body = api.get(f"/api/sweeps/{sweep_id}").json()
        return body if body["status"] != "running" else None

    sweep = wait_for(finished, timeout=TRAIN_S * 2, interval=1, what="the sweep to finish")
    log = sweep_stack.log.read_text()[-3000:]
    assert sweep["status"] == "finished", (sweep, log)
    assert sweep["counts"] == {"succeeded": len(labels)} == {"succeeded": sweep["max_runs"]}
    ranked = sweep["runs"]
    losses = [r["best_val_loss"] for r in ranked]
    assert losses == sorted(losses) and sweep["best_run_id"] == ranked[0]["id"], ranked
    assert sorted(r["name"] for r in ranked) == sorted(labels)
    by_name = {r["name"]: r for r in ranked}
    assert by_name["original"]["config"] == run["config"]
    assert by_name[lag_label]["config"] == {**run["config"], **lag["suggestion"]}

    def drawn_final() -> bool:
        statuses = column(table_rows(page, table), "status")
        return "finished ·" in main.inner_text() and statuses == ["succeeded"] * len(ranked)

    wait_for(drawn_final, timeout=60, interval=0.5, what="the page to show the sweep finished")
    wait_for_streamlit(page)
    if "running ·" in first_drawn:  # it was drawn before the runs ended, and followed them
        assert "Cancel sweep" in first_drawn, first_drawn
        assert page.get_by_role("button", name="Cancel sweep").count() == 0

    # 4. The ranked table: every run, in the API's order, which is their val_loss order.
    rows = table_rows(page, table)
    assert column(rows, "") == [f"run?id={r['id']}" for r in ranked], rows
    assert column(rows, "run") == [r["name"] for r in ranked], rows
    assert column(rows, "rank") == [str(n) for n in range(1, len(ranked) + 1)], rows
    # The knob each run tried, beside its name; the hidden cells hold the
    # numbers unformatted. The sweep ranks by val_loss: its one column.
    tried = [str(r["config"]["bn_momentum"]) for r in ranked]
    assert [float(cell) for cell in column(rows, "bn_momentum")] == [float(t) for t in tried]
    shown_losses = [float(cell) for cell in column(rows, "best val_loss ↓")]
    assert shown_losses == pytest.approx(losses, rel=1e-6), rows
    no_exception(page)
    page.screenshot(path=screenshots / "sweep-3-ranked.png")

    # 5. The parallel coordinates, the best runs' curves, the metric against the knob.
    parcoords = f"[class*='st-key-parcoords-{sweep_id}'] .js-plotly-plot"
    curves = f"[class*='st-key-curves-{sweep_id}'] .js-plotly-plot"
    page.locator(curves).first.wait_for(timeout=30_000)
    assert trace_counts(page, parcoords) == [1]
    assert page.locator(f"{parcoords} .parcoords").count() == 1
    drawn = min(len(ranked), TOP_CURVES)
    assert trace_counts(page, curves) == [drawn]
    assert page.locator(f"{curves} .scatterlayer .trace").count() == drawn
    no_exception(page)
    page.locator(parcoords).scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "sweep-4-parallel-coordinates.png")
    page.locator(curves).scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "sweep-5-curves.png")
    knob = f"[class*='st-key-knob-{sweep_id}-bn_momentum'] .js-plotly-plot"
    assert trace_counts(page, knob) == [1]
    assert page.locator(f"{knob} .scatterlayer .trace .points path").count() == len(ranked)
    page.locator(knob).scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "sweep-6-knob.png")
