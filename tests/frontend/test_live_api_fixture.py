"""The page tests' live API answers, and its fake epochs read back as stored."""

from __future__ import annotations

import httpx

from tests.frontend.conftest import LiveApi


def test_live_api_serves_seeded_runs(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    run = live_api.create_run(dataset["id"], {"image_size": [16, 16], "filters": [4], "epochs": 3})
    live_api.train_fake_epochs(run["id"], 3)
    metrics = httpx.get(f"{live_api.url}/api/runs/{run['id']}/metrics").json()
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
    assert len(metrics["batches"]) == 12
    assert httpx.get(f"{live_api.url}/api/runs/{run['id']}").json()["status"] == "succeeded"
