"""Real tiny trainings through run_training: what a run records, streams
and saves; how it fails."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import keras
import pytest
from redis import Redis

from backend import artifacts, runs
from backend.datasets.layout import dataset_dir
from backend.db import Database
from backend.settings import Settings
from tests.conftest import BOTH_DATABASES
from tests.worker.conftest import (
    CLASSES,
    STEPS,
    TINY,
    TRAIN_IMAGES,
    MakeRun,
    epoch_numbers,
    get_run,
    of_type,
    stream,
)
from worker.training.runner import run_training

EPOCH_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy", "seconds", "images_per_sec", "lr")

pytestmark = BOTH_DATABASES


def test_tiny_run_records_streams_and_saves(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    assert run_training(run_id, settings, database, redis_client) == "succeeded"

    run = get_run(database, run_id)
    assert (run.status, run.epochs_done, run.error) == ("succeeded", 3, None)
    with database.session() as session:
        rows = runs.epoch_rows(session, run_id)
        batches = runs.batch_rows(session, run_id)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[-1]["val_accuracy"] > 0.6, rows  # chance is 1/3
    assert rows[-1]["lr"] == pytest.approx(TINY["learning_rate"])

    received = stream(redis_client, run_id)
    assert [e["status"] for e in of_type(received, "status")] == ["running", "succeeded"]
    epoch_events = of_type(received, "epoch")
    assert [e["epoch"] for e in epoch_events] == [1, 2, 3]
    for event, row in zip(epoch_events, rows, strict=True):
        assert all(isinstance(event[key], float) for key in EPOCH_KEYS), event
        assert event["images_per_sec"] > 0 and event["seconds"] > 0
        assert {k: v for k, v in event.items() if k != "type"} == row
    # A batch point every 3 steps, at fractional epochs, before its epoch's event.
    every = TINY["batch_metrics_every"]
    expected_steps = list(range(every, 3 * STEPS + 1, every))
    assert [b["step"] for b in batches] == expected_steps
    assert [b["step"] for b in of_type(received, "batch")] == expected_steps
    assert batches[0]["epoch"] == pytest.approx(every / STEPS)
    assert all(b["loss"] >= 0 and 0 <= b["accuracy"] <= 1 for b in batches)
    first_epoch_end = received.index(epoch_events[0])
    assert all(b["epoch"] <= 1 for b in of_type(received[:first_epoch_end], "batch"))

    folder = settings.runs_dir / run_id
    model = keras.models.load_model(folder / artifacts.MODEL_FILE)
    assert model.output_shape == (None, len(CLASSES))
    with (folder / artifacts.HISTORY_FILE).open() as handle:
        history = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in history] == [1, 2, 3]
    assert set(EPOCH_KEYS) <= set(history[0])
    checkpoints = sorted(p.name for p in (folder / artifacts.CHECKPOINTS).iterdir())
    assert checkpoints == ["epoch-0002.keras", "epoch-0003.keras"]  # the last two only


def test_missing_dataset_fails_with_a_readable_error(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    shutil.rmtree(dataset_dir(settings.datasets_dir, get_run(database, run_id).dataset_id or ""))
    assert run_training(run_id, settings, database, redis_client) == "failed"
    run = get_run(database, run_id)
    assert run.status == "failed"
    assert run.error is not None and run.error.startswith("FileNotFoundError: dataset ")
    assert "\n" not in run.error
    last = stream(redis_client, run_id)[-1]
    assert (last["status"], last["error"]) == ("failed", run.error)


def test_corrupt_image_fails_with_the_decoder_message(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    folder = dataset_dir(settings.datasets_dir, get_run(database, run_id).dataset_id or "")
    (folder / "000" / "00001.png").write_bytes(b"not an image at all")
    assert run_training(run_id, settings, database, redis_client) == "failed"
    error = get_run(database, run_id).error or ""
    assert error == (
        "InvalidArgumentError: Unknown image file format. "
        "One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required."
    ), error


def test_a_dead_redis_never_stops_training(
    settings: Settings, database: Database, make_run: MakeRun
) -> None:
    run_id = make_run(epochs=1)
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    assert run_training(run_id, settings, database, dead) == "succeeded"
    assert epoch_numbers(database, run_id) == [1]


def test_a_malformed_run_id_touches_nothing(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="not a run id"):
        run_training("../../etc", settings, database, None)


def test_batch_points_are_per_window_means_that_add_up_to_the_epoch(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    # One point per step: each is that batch's own loss, not Keras's mean so far.
    run_id = make_run(epochs=1, batch_metrics_every=1)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    with database.session() as session:
        batches = runs.batch_rows(session, run_id)
        (epoch,) = runs.epoch_rows(session, run_id)
    assert [b["step"] for b in batches] == list(range(1, STEPS + 1))
    assert batches[-1]["epoch"] == 1.0
    sizes = [TINY["batch_size"]] * (STEPS - 1) + [TRAIN_IMAGES - TINY["batch_size"] * (STEPS - 1)]
    for key in ("loss", "accuracy"):
        weighted = sum(b[key] * n for b, n in zip(batches, sizes, strict=True)) / TRAIN_IMAGES
        assert weighted == pytest.approx(epoch[key], rel=1e-4), key
    assert batches[0]["loss"] > batches[-2]["loss"]  # it learned within the epoch
