"""The sweep page through AppTest against a live API, over a sweep and its
runs made directly in SQL (no study, no training): the ranked table with
only the knobs that vary, parallel coordinates, the best curves, the metric
against each knob, cancel; and a run of the sweep links to it."""

from __future__ import annotations

import json
from typing import Any

import httpx
from streamlit.testing.v1 import AppTest

from tests.frontend.conftest import LiveApi, open_app_page, page_path

BASE = {"image_size": [16, 16], "filters": [4], "epochs": 3, "batch_size": 16}
SPACE = {
    "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True},
    "optimizer": ["adam", "sgd"],
    "batch_size": [16],
}
# (learning_rate, optimizer, val_losses): trial 1 is the best, trial 3 pruned.
TRIALS = [
    (0.001, "adam", [1.0, 0.8, 0.9]),
    (0.01, "adam", [1.1, 0.5, 0.4]),
    (0.1, "sgd", [2.0, 1.9]),
    (0.0003, "sgd", [1.2, 1.0, 0.7]),
]


def seeded_sweep(live_api: LiveApi, status: str = "running") -> tuple[str, list[str]]:
    dataset = live_api.upload_dataset()["id"]
    sweep = live_api.add_sweep(dataset, SPACE, name="lr and optimizer", status=status)
    ids = []
    for number, (lr, optimizer, losses) in enumerate(TRIALS):
        pruned = number == 2
        ids.append(
            live_api.add_run(
                dataset,
                f"trial {number}",
                {**BASE, "learning_rate": lr, "optimizer": optimizer},
                val_losses=losses,
                sweep_id=sweep,
                trial_number=number,
                status="pruned" if pruned else "succeeded",
                error="pruned at epoch 2: val_loss 1.9 above the median" if pruned else None,
            )
        )
    return sweep, ids


def open_sweep(sweep_id: str) -> AppTest:
    page = AppTest.from_file(page_path("sweep"), default_timeout=30)
    page.query_params["id"] = sweep_id
    return page.run()


def figures(page: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in page.get("plotly_chart")]


def test_the_sweep_ranked_with_its_charts(live_api: LiveApi) -> None:
    sweep, ids = seeded_sweep(live_api)
    page = open_sweep(sweep)
    assert not page.exception
    assert page.subheader[0].value == "lr and optimizer"
    assert any("4 of 4 runs" in m.value for m in page.markdown)
    table = page.dataframe[0].value
    assert list(table["run"]) == ["trial 1", "trial 3", "trial 0", "trial 2"]  # best first
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert list(table["best val_loss ↓"]) == [0.4, 0.7, 0.8, 1.9]
    assert list(table["optimizer"]) == ["adam", "sgd", "adam", "sgd"]
    assert "batch_size" not in table.columns  # the same in every run
    assert table["open"][0] == f"run?id={ids[1]}"
    assert any("The same in every run: batch_size 16" in c.value for c in page.caption)
    parcoords, curves, *knobs = figures(page)
    dims = parcoords["data"][0]["dimensions"]
    assert [d["label"] for d in dims] == ["learning_rate (log)", "optimizer", "best val_loss ↓"]
    assert dims[1]["ticktext"] == ["adam", "sgd"]
    assert [t["name"] for t in curves["data"]] == ["trial 1", "trial 3", "trial 0", "trial 2"]
    assert curves["data"][0]["y"] == [1.1, 0.5, 0.4]
    assert [k["layout"]["title"]["text"] for k in knobs] == ["learning_rate", "optimizer"]
    assert knobs[0]["layout"]["xaxis"]["type"] == "log"


def test_cancel_reaches_the_api(live_api: LiveApi) -> None:
    sweep, _ = seeded_sweep(live_api)
    page = open_sweep(sweep)
    page.button(key="cancel-sweep").click().run()
    assert not page.exception
    assert httpx.get(f"{live_api.url}/api/sweeps/{sweep}", timeout=10).json()["status"] == (
        "cancelled"
    )
    assert not [b for b in page.button if b.key == "cancel-sweep"]


def test_a_finished_sweep_has_no_cancel_and_an_unknown_id_is_said(live_api: LiveApi) -> None:
    sweep, _ = seeded_sweep(live_api, status="finished")
    page = open_sweep(sweep)
    assert not page.exception and not [b for b in page.button if b.key == "cancel-sweep"]
    page = open_sweep("nope")
    assert not page.exception
    assert "No sweep with id `nope`" in page.error[0].value


def test_a_pruned_run_says_why_and_opens_its_sweep(live_api: LiveApi) -> None:
    sweep, ids = seeded_sweep(live_api)
    app = open_app_page("run", id=ids[2])
    assert not app.exception
    said = " ".join(w.value for w in app.warning)
    assert "Pruned by its sweep" in said and "val_loss 1.9 above the median" in said
    app.button(key="open-sweep").click().run()
    assert not app.exception
    assert app.query_params["id"] == sweep
    assert app.subheader[0].value == "lr and optimizer"


def test_the_runs_page_filters_by_sweep(live_api: LiveApi) -> None:
    sweep, _ = seeded_sweep(live_api)
    live_api.add_run(None, "not in it")
    page = AppTest.from_file(page_path("runs"), default_timeout=30)
    page.query_params["sweep"] = sweep
    page.run()
    assert not page.exception
    assert sorted(page.dataframe[0].value["run"]) == [f"trial {i}" for i in range(4)]
    assert page.selectbox(key="rf.sweep").value == sweep
