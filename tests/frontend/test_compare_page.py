"""The Compare page through AppTest against a live API: both runs' curves
overlaid and only the settings that differ; the picker follows the URL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from frontend.api_client import ApiClient
from tests.frontend.conftest import LiveApi, page_path

BASE = {"image_size": [16, 16], "filters": [4], "epochs": 3}


def open_compare(ids: list[str]) -> AppTest:
    page = AppTest.from_file(page_path("compare"), default_timeout=30)
    page.query_params["ids"] = ",".join(ids)
    return page.run()


def figures(page: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in page.get("plotly_chart")]


def two_runs(live_api: LiveApi) -> tuple[dict, dict]:
    dataset = live_api.upload_dataset()
    slow = live_api.create_run(dataset["id"], {**BASE, "bn_momentum": 0.99}, name="momentum .99")
    fast = live_api.create_run(dataset["id"], {**BASE, "bn_momentum": 0.9}, name="momentum .9")
    live_api.train_fake_epochs(slow["id"], 3)
    live_api.train_fake_epochs(fast["id"], 2)
    return slow, fast


def test_both_runs_overlaid_with_their_differing_settings(live_api: LiveApi) -> None:
    slow, fast = two_runs(live_api)
    page = open_compare([slow["id"], fast["id"]])
    assert not page.exception
    loss, accuracy = figures(page)
    traces = {t["name"]: t for t in loss["data"]}
    assert traces["momentum .99"]["x"] == [1, 2, 3] and traces["momentum .9"]["x"] == [1, 2]
    assert traces["momentum .99 (validation)"]["line"]["dash"] == "dash"
    assert traces["momentum .99"]["line"]["color"] != traces["momentum .9"]["line"]["color"]
    assert len(accuracy["data"]) == 4
    table = page.dataframe[0].value.set_index("")
    assert list(table.columns) == ["momentum .99", "momentum .9"]
    assert table.loc["bn_momentum"].tolist() == ["0.99", "0.9"]
    assert "learning_rate" not in table.index and "optimizer" not in table.index
    assert table.loc["epochs"].tolist() == ["3 / 3", "2 / 3"]


def test_the_picker_writes_the_url(live_api: LiveApi) -> None:
    slow, fast = two_runs(live_api)
    page = open_compare([slow["id"]])
    assert page.multiselect[0].value == [slow["id"]]
    page.multiselect[0].select(fast["id"]).run()
    assert page.query_params["ids"] == f"{slow['id']},{fast['id']}"
    assert len(figures(page)[0]["data"]) == 4


def test_an_unknown_id_is_named(live_api: LiveApi) -> None:
    slow, _ = two_runs(live_api)
    page = open_compare([slow["id"], "gone"])
    assert not page.exception
    assert "gone" in page.warning[0].value
    assert page.multiselect[0].value == [slow["id"]]


def test_twenty_runs_one_small_metrics_read_each(
    live_api: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = live_api.upload_dataset()["id"]
    ids = [
        live_api.add_run(
            dataset, f"r{i}", {**BASE, "learning_rate": 0.001 * (i + 1)}, val_losses=[1.0, 0.5]
        )
        for i in range(21)
    ]
    reads: list[tuple[str, int | None]] = []
    real = ApiClient.run_metrics

    def counted(self: ApiClient, run_id: str, max_points: int | None = None) -> dict[str, Any]:
        reads.append((run_id, max_points))
        return real(self, run_id, max_points)

    monkeypatch.setattr(ApiClient, "run_metrics", counted)
    page = open_compare(ids)  # one more than Compare takes
    assert not page.exception
    assert "the first 20 of the 21" in page.warning[0].value
    assert page.multiselect[0].value == ids[:20]
    assert sorted(r for r, _ in reads) == sorted(ids[:20])  # one read per run
    assert {bound for _, bound in reads} == {20}  # 400 points shared by 20 runs
    loss, _ = figures(page)
    assert len(loss["data"]) == 40  # training and validation of each
    assert len({t["line"]["color"] for t in loss["data"]}) == 20
