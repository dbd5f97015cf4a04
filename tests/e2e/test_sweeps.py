"""Sweeps over the whole stack: ``curvelab up --workers 2``, a tiny dataset
and network. A 2×2 grid trains two runs at a time on the two workers and
ranks them by their best val_loss; a median pruner stops a run built to be
hopeless (a learning rate that cannot move the weights) before its last epoch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.synthetic import write_character_zip
from tests.conftest import wait_for
from tests.e2e.conftest import Stack, start_stack, stop_stack
from tests.e2e.test_service_loop import CONFIG

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_workers(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    running = start_stack(tmp_path, redis_url, "--workers", "2")
    try:
        # Both heartbeats, so that the first two runs start together.
        wait_for(
            lambda: httpx.get(f"{running.api_url}/api/health", timeout=2).json()["workers"] >= 2,
            timeout=120,
            interval=0.5,
            what="two workers",
        )
        yield running
    finally:
        stop_stack(running.process)


def _dataset(client: httpx.Client, tmp_path: Path) -> str:
    archive = write_character_zip(
        tmp_path / "chars.zip", num_classes=4, per_class=60, image_size=(16, 16), mode="L", seed=3
    )
    with archive.open("rb") as handle:
        reply = client.post(
            "/api/datasets", files={"file": ("chars.zip", handle, "application/zip")}
        )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def _finished(client: httpx.Client, sweep_id: str, timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/api/sweeps/{sweep_id}").json()
        return body if body["status"] != "running" else None

    return dict(wait_for(done, timeout=timeout, interval=1.0, what="the sweep to finish"))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_grid_fans_out_over_two_workers_and_ranks_by_val_loss(
    two_workers: Stack, tmp_path: Path
) -> None:
    with two_workers.client() as client:
        dataset_id = _dataset(client, tmp_path)
        body = {
            "dataset_id": dataset_id,
            "config": {**CONFIG, "epochs": 3, "gap_probes": False},
            "space": {"learning_rate": [0.003, 0.01], "bn_momentum": [0.9, 0.5]},
            "method": "grid",
            "parallel": 2,
        }
        reply = client.post("/api/sweeps", json=body)
        assert reply.status_code == 201, reply.text
        created = reply.json()
        assert (created["status"], created["max_runs"]) == ("running", 4)
        # Two launched at once; a worker may have taken one already.
        assert sum(created["counts"].values()) == 2, created["counts"]
        assert set(created["counts"]) <= {"queued", "running"}, created["counts"]
        sweep = _finished(client, created["id"], timeout=600)
        log = two_workers.log.read_text()[-3000:]
        assert sweep["status"] == "finished", (sweep, log)
        assert sweep["counts"] == {"succeeded": 4}, sweep
        ranked = sweep["runs"]
        losses = [run["best_val_loss"] for run in ranked]
        assert losses == sorted(losses) and sweep["best_run_id"] == ranked[0]["id"]
        assert {(r["params"]["learning_rate"], r["params"]["bn_momentum"]) for r in ranked} == {
            (0.003, 0.9),
            (0.003, 0.5),
            (0.01, 0.9),
            (0.01, 0.5),
        }
        spans = []
        for run in ranked:
            full = client.get(f"/api/runs/{run['id']}").json()
            spans.append((_at(full["started_at"]), _at(full["finished_at"])))
        # At every run's start, how many were training (itself included).
        at_once = [sum(s <= start < f for s, f in spans) for start, _ in spans]
        assert max(at_once) == 2, spans


def test_a_median_pruner_stops_a_hopeless_run_before_its_last_epoch(
    two_workers: Stack, tmp_path: Path
) -> None:
    epochs = 6
    with two_workers.client() as client:
        dataset_id = _dataset(client, tmp_path)
        body = {
            "dataset_id": dataset_id,
            "config": {**CONFIG, "epochs": epochs, "gap_probes": False},
            # The good rate first: it finishes, and sets the median to beat.
            "space": {"learning_rate": [0.01, 1e-7]},
            "method": "grid",
            "parallel": 1,
            "prune": "median",
            "prune_startup_runs": 1,
            "prune_warmup_epochs": 0,
        }
        reply = client.post("/api/sweeps", json=body)
        assert reply.status_code == 201, reply.text
        sweep = _finished(client, reply.json()["id"], timeout=600)
        by_rate = {run["params"]["learning_rate"]: run for run in sweep["runs"]}
        good, hopeless = by_rate[0.01], by_rate[1e-7]
        assert good["status"] == "succeeded", sweep
        assert hopeless["status"] == "pruned", (sweep, two_workers.log.read_text()[-3000:])
        assert hopeless["epochs_done"] < epochs
        assert hopeless["error"].startswith("pruned at epoch "), hopeless["error"]
        assert "than the median" in hopeless["error"]
        assert sweep["runs"][0]["id"] == good["id"]
