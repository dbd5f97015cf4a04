"""A task delivered again: resumed from its checkpoint, or left alone when
final; and cancels, before and during training."""

from __future__ import annotations

import shutil
import threading

import keras
import pytest
from redis import Redis

from backend import artifacts, events, runs
from backend.db import Database
from backend.settings import Settings
from tests.conftest import BOTH_DATABASES
from tests.worker.conftest import (
    STEPS,
    MakeRun,
    epoch_numbers,
    get_run,
    of_type,
    redelivered,
    set_run,
    stream,
)
from worker.training.runner import run_training

pytestmark = BOTH_DATABASES


def test_redelivered_task_resumes_from_its_checkpoint(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = make_run(epochs=2)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    # As if the worker died after epoch 2 of 4 and the broker redelivered the task.
    redelivered(database, run_id, 4, monkeypatch)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"

    run = get_run(database, run_id)
    assert (run.status, run.epochs_done, run.resumed_at_epoch) == ("succeeded", 4, 3)
    assert epoch_numbers(database, run_id) == [1, 2, 3, 4]
    received = stream(redis_client, run_id)
    assert [e["epoch"] for e in of_type(received, "epoch")] == [1, 2, 3, 4]
    running = [e for e in of_type(received, "status") if e["status"] == "running"]
    assert running[-1]["resumed_at_epoch"] == 3
    with database.session() as session:
        steps = [b["step"] for b in runs.batch_rows(session, run_id)]
    assert steps == sorted(set(steps)) and steps[-1] <= 4 * STEPS
    # The optimizer state came from the checkpoint: its step count went on.
    model = keras.models.load_model(settings.runs_dir / run_id / artifacts.MODEL_FILE)
    assert int(model.optimizer.iterations) == 4 * STEPS


def test_a_worker_dead_before_the_checkpoint_trains_that_epoch_again(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
) -> None:
    run_id = make_run(epochs=3)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    with database.session() as session:
        before = runs.epoch_rows(session, run_id)
    # Epoch 3 recorded and published, its checkpoint never written; a file
    # past the record (a stale trainer's, say) is not a checkpoint to trust.
    checkpoints = settings.runs_dir / run_id / artifacts.CHECKPOINTS
    (checkpoints / "epoch-0003.keras").unlink()
    (checkpoints / "epoch-0009.keras").write_bytes(b"not a model")
    config = {**get_run(database, run_id).config, "epochs": 4}
    set_run(database, run_id, status="running", config=config, finished_at=None)

    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    run = get_run(database, run_id)
    assert (run.epochs_done, run.resumed_at_epoch) == (4, 3)
    with database.session() as session:
        after = runs.epoch_rows(session, run_id)
        points = runs.batch_rows(session, run_id)
    assert [row["epoch"] for row in after] == [1, 2, 3, 4]
    assert after[:2] == before[:2]
    assert after[2]["loss"] != before[2]["loss"]  # trained again, on another shuffle
    steps = [point["step"] for point in points]
    assert steps == sorted(set(steps)) and steps[-1] <= 4 * STEPS
    # The stream says so: epoch 3 again, after the status that rewinds to it.
    received = [
        (e["type"], e.get("epoch") or e.get("resumed_at_epoch"))
        for e in stream(redis_client, run_id)
        if e["type"] == "epoch" or "resumed_at_epoch" in e
    ]
    assert received == [
        ("epoch", 1),
        ("epoch", 2),
        ("epoch", 3),
        ("status", 4),  # as SQL had it when the task began
        ("status", 3),  # rewound to the newest checkpoint
        ("epoch", 3),
        ("epoch", 4),
    ]
    model = keras.models.load_model(settings.runs_dir / run_id / artifacts.MODEL_FILE)
    assert int(model.optimizer.iterations) == 4 * STEPS


def test_missing_checkpoint_starts_over_without_duplicates(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_id = make_run(epochs=2)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    shutil.rmtree(settings.runs_dir / run_id / artifacts.CHECKPOINTS)
    set_run(database, run_id, status="running")

    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    assert "starting over from epoch 0" in caplog.text
    assert epoch_numbers(database, run_id) == [1, 2]
    model = keras.models.load_model(settings.runs_dir / run_id / artifacts.MODEL_FILE)
    assert int(model.optimizer.iterations) == 2 * STEPS


def test_duplicate_delivery_of_a_finished_run_is_a_no_op(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run(epochs=1)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    before = stream(redis_client, run_id)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    assert stream(redis_client, run_id) == before
    assert epoch_numbers(database, run_id) == [1]


def test_cancel_stops_at_the_next_batch_and_keeps_the_curves(
    settings: Settings, database: Database, redis_client: Redis, redis_url: str, make_run: MakeRun
) -> None:
    run_id = make_run(epochs=100)
    seen_epoch = threading.Event()

    def cancel_after_first_epoch() -> None:
        client, last = Redis.from_url(redis_url), "0"
        while not seen_epoch.is_set():
            for _, entries in client.xread({events.stream_key(run_id): last}, block=200) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if events.decode(fields)["type"] == "epoch":
                        client.set(events.cancel_key(run_id), "1")
                        seen_epoch.set()
        client.close()

    thread = threading.Thread(target=cancel_after_first_epoch, daemon=True)
    thread.start()
    try:
        assert run_training(run_id, settings, database, redis_client) == "cancelled"
    finally:
        seen_epoch.set()
        thread.join(5)

    run = get_run(database, run_id)
    assert run.status == "cancelled" and 1 <= run.epochs_done < 100
    assert epoch_numbers(database, run_id) == list(range(1, run.epochs_done + 1))
    last = stream(redis_client, run_id)[-1]
    assert (last["status"], last["epochs_done"]) == ("cancelled", run.epochs_done)
    assert not redis_client.exists(events.cancel_key(run_id))
    assert not (settings.runs_dir / run_id / artifacts.MODEL_FILE).exists()


def test_a_cancel_while_queued_never_trains(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    redis_client.set(events.cancel_key(run_id), "1")
    assert run_training(run_id, settings, database, redis_client) == "cancelled"
    assert epoch_numbers(database, run_id) == []
