"""Runs stored under an older config shape train and resume over the real
runner: a removed field ("legacy_knob"), a renamed one ("metrics_every" for
batch_metrics_every) and fields that version lacked (gap_probes, ...) are
read by backend.train_config.read_stored_config; SQL keeps what was stored.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from backend.db import Database
from backend.settings import Settings
from tests.conftest import BOTH_DATABASES
from tests.worker.conftest import TINY, MakeRun, epoch_numbers, get_run, set_run
from worker.training.runner import run_training

pytestmark = BOTH_DATABASES

NEWER = ("mixed_precision", "jit_compile", "gap_probes", "batch_metrics_every")


def old_shape(config: dict[str, Any], epochs: int) -> dict[str, Any]:
    """``config`` as an earlier version would have stored it."""
    kept = {key: value for key, value in config.items() if key not in NEWER}
    return {**kept, "epochs": epochs, "legacy_knob": 3, "metrics_every": 2}


def test_a_queued_run_of_an_old_shape_trains(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    stored = old_shape(get_run(database, run_id).config, epochs=2)
    set_run(database, run_id, config=stored)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    run = get_run(database, run_id)
    assert (run.status, run.epochs_done, run.error) == ("succeeded", 2, None)
    assert run.config == stored  # nothing dropped from SQL


def test_an_interrupted_run_of_an_old_shape_resumes_from_its_checkpoint(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    api: TestClient,
) -> None:
    run_id = make_run(epochs=1)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    # As if a worker of the earlier version died after epoch 1 of 2 and the
    # broker redelivered the task to one of this version.
    stored = old_shape(get_run(database, run_id).config, epochs=2)
    set_run(database, run_id, status="running", config=stored, finished_at=None)
    public = api.get(f"/api/runs/{run_id}").json()
    assert public["config_unknown"] == {"legacy_knob": 3, "metrics_every": 2}
    assert public["config"]["batch_metrics_every"] == 10 and public["config"]["gap_probes"]

    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    run = get_run(database, run_id)
    assert (run.status, run.epochs_done, run.resumed_at_epoch) == ("succeeded", 2, 2)
    assert epoch_numbers(database, run_id) == [1, 2]
    assert run.config == stored
    assert TINY["filters"] == stored["filters"]  # the network it resumed is the stored one
    listed = api.get("/api/runs")
    assert listed.status_code == 200
    assert listed.json()["items"][0]["config_unknown"]["legacy_knob"] == 3
