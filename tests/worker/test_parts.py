"""The runner's small parts: error messages, run paths, history CSV, the
Redis side channel, checkpoint snapshots and the order the recorder writes in."""

from __future__ import annotations

import csv
import os
import threading
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from redis import Redis

from backend import events, runs
from backend.db import Database
from backend.settings import Settings
from backend.train_config import TrainConfig
from tests.conftest import wait_for
from tests.worker.conftest import TINY, MakeRun, epoch_numbers, get_run, of_type, stream
from worker.lease import LeaseTiming, RunLease
from worker.training import artifacts
from worker.training.artifacts import Snapshot, run_dir, write_history
from worker.training.model import compile_model, make_model
from worker.training.runner import describe_error, run_training
from worker.training.sidechannel import SideChannel


class FakeOpError(Exception):
    """Shaped like tf.errors.OpError: the text lives in ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def test_describe_error_keeps_what_went_wrong() -> None:
    graph = FakeOpError(
        "Graph execution error:\n\nDetected at node DecodeImage defined at (most recent call"
        ' last):\n  File "x.py", line 3, in f\n\nNumber of channels must be 1, 3 or 4, was 2\n'
        "\t [[{{node DecodeImage}}]]\n\t [[IteratorGetNext]] [Op:__inference_train_function]"
    )
    assert describe_error(graph) == "FakeOpError: Number of channels must be 1, 3 or 4, was 2"
    assert describe_error(ValueError("bad\nvalue")) == "ValueError: bad value"
    assert describe_error(KeyError()) == "KeyError"
    long = describe_error(RuntimeError("x" * 1000))
    assert len(long) < 350 and long.endswith("…")


def test_run_dir_refuses_anything_but_hex(settings: Settings) -> None:
    assert run_dir(settings, "abc123") == settings.runs_dir / "abc123"
    for bad in ("", "..", "ABC", "a/b", "a" * 65, "abc\n"):
        with pytest.raises(ValueError, match="not a run id"):
            run_dir(settings, bad)


def test_history_csv_has_a_column_per_metric(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "history.csv"
    write_history(path, [{"epoch": 1, "loss": 0.5, "val_loss": None}, {"epoch": 2, "x": 1.0}])
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {"epoch": "1", "loss": "0.5", "val_loss": "", "x": ""},
        {"epoch": "2", "loss": "", "val_loss": "", "x": "1.0"},
    ]
    assert [p.name for p in path.parent.iterdir()] == ["history.csv"]  # no partial left


def test_side_channel_publishes_in_order_and_sees_the_cancel(redis_client: Redis) -> None:
    run_id = "feed"
    with SideChannel(redis_client, run_id, poll_s=0.05) as side:
        for step in range(1, 4):
            side.publish(events.batch_event(step, step / 4, {"loss": 1.0}))
        side.publish(events.epoch_event(1, {"loss": 1.0}))
        assert not side.cancelled.wait(0.2)
        redis_client.set(events.cancel_key(run_id), "1")
        assert side.cancelled.wait(2)
    received = [events.decode(f) for _, f in redis_client.xrange(events.stream_key(run_id))]
    assert [(e["type"], e.get("step", e.get("epoch"))) for e in received] == [
        ("batch", 1),
        ("batch", 2),
        ("batch", 3),
        ("epoch", 1),
    ]


def test_side_channel_outlives_a_dead_redis() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    started = time.monotonic()
    with SideChannel(dead, "dead", poll_s=0.05) as side:
        side.publish(events.epoch_event(1, {"loss": 1.0}))
        time.sleep(0.2)
    assert not side.cancelled.is_set()
    assert time.monotonic() - started < 5


def _epochs_on(redis: Redis, run_id: str) -> list[int]:
    return [e["epoch"] for e in of_type(stream(redis, run_id), "epoch")]


def test_side_channel_publishes_only_under_its_lease(redis_client: Redis) -> None:
    run_id = "fenced"
    lease = RunLease(redis_client, run_id, LeaseTiming(0.05, 5.0, 0.05, 1.0))
    assert lease.acquire()
    with SideChannel(redis_client, run_id, poll_s=0.05, drain_s=0.5, lease=lease) as side:
        side.publish(events.epoch_event(1, {"loss": 1.0}))
        wait_for(lambda: _epochs_on(redis_client, run_id) == [1], timeout=5, what="epoch 1")
        # Flushed: events wait for the lease, and go out once it is back.
        redis_client.delete(lease.key)
        side.publish(events.epoch_event(2, {"loss": 0.9}))
        time.sleep(0.3)
        assert _epochs_on(redis_client, run_id) == [1]
        redis_client.set(lease.key, lease.claim)  # being taken back: still waiting
        time.sleep(0.3)
        assert _epochs_on(redis_client, run_id) == [1]
        redis_client.set(lease.key, lease.token)
        wait_for(lambda: _epochs_on(redis_client, run_id) == [1, 2], timeout=5, what="epoch 2")
        # Another holder: this trainer is stale; nothing more of it goes out.
        redis_client.set(lease.key, "another-worker")
        side.publish(events.epoch_event(3, {"loss": 0.8}))
        assert side.lost.wait(5)
        redis_client.set(lease.key, lease.token)
        side.publish(events.epoch_event(4, {"loss": 0.7}))
        time.sleep(0.3)
    assert _epochs_on(redis_client, run_id) == [1, 2]
    assert lease.lost.is_set()  # the whole trainer hears of it


def test_side_channel_drops_what_waits_once_the_trainer_is_lost(redis_client: Redis) -> None:
    run_id = "stale"
    lease = RunLease(redis_client, run_id, LeaseTiming(0.05, 5.0, 0.05, 1.0))
    # Its lease expired while it was frozen; its successor finished and let go.
    with SideChannel(redis_client, run_id, poll_s=0.05, drain_s=5.0, lease=lease) as side:
        side.publish(events.batch_event(9, 1.25, {"loss": 1.0}))
        time.sleep(0.3)
        lease.lost.set()  # the lease keeper asked SQL: a later delivery had the run
        started = time.monotonic()
    assert time.monotonic() - started < 2  # not drained for drain_s: dropped
    assert stream(redis_client, run_id) == []


def _fitted(config: TrainConfig) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    model = compile_model(make_model(config, 3), config)
    rng = np.random.default_rng(0)
    x = rng.random((24, *config.image_size, 3), dtype=np.float32)
    y = np.arange(24) % 3
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return model, x, y


def _values(model: keras.Model) -> list[np.ndarray]:
    # Weights (BatchNorm statistics included) and optimizer state: what a .keras
    # file holds (Keras does not save dropout's seed states, from any model).
    return [np.array(v.numpy()) for v in [*model.weights, *model.optimizer.variables]]


@pytest.mark.parametrize("mixed", [False, True])
def test_a_snapshot_saves_the_state_it_was_taken_at(tmp_path: Path, mixed: bool) -> None:
    config = TrainConfig(**{**TINY, "dropout": 0.2, "mixed_precision": mixed})
    model, x, y = _fitted(config)
    taken = _values(model)
    snapshot = Snapshot(model)
    snapshot.take()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # training goes on meanwhile
    saving = threading.Thread(target=snapshot.save, args=(tmp_path / "epoch-0001.keras",))
    saving.start()
    saving.join()
    loaded = keras.models.load_model(tmp_path / "epoch-0001.keras")
    assert type(loaded.optimizer) is type(model.optimizer)
    saved = _values(loaded)
    assert len(saved) == len(taken)
    assert all(np.array_equal(a, b) for a, b in zip(taken, saved, strict=True))
    # The shadow is free again: the next epoch's snapshot does not wait.
    snapshot.take()
    snapshot.release()


def test_a_failing_checkpoint_write_fails_the_run_and_records_nothing_after_it(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_save = artifacts.save_model
    saved: list[str] = []

    def disk_fills_at_epoch_2(model: keras.Model, path: Path, fence: Any = None) -> bool:
        if path.name == "epoch-0002.keras":
            raise OSError(28, "No space left on device")
        written = real_save(model, path, fence)
        saved.append(path.name)
        return written

    monkeypatch.setattr(artifacts, "save_model", disk_fills_at_epoch_2)
    run_id = make_run(epochs=5)
    assert run_training(run_id, settings, database, redis_client) == "failed"
    run = get_run(database, run_id)
    assert run.error == "OSError: [Errno 28] No space left on device"
    # Epoch 2 was recorded and published before its checkpoint failed;
    # nothing after it was (a resumed run would train epoch 2 again).
    assert (saved, run.epochs_done, epoch_numbers(database, run_id)) == (
        ["epoch-0001.keras"],
        2,
        [1, 2],
    )
    assert [e["epoch"] for e in of_type(stream(redis_client, run_id), "epoch")] == [1, 2]


def test_each_epoch_is_written_sql_then_event_then_checkpoint(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = make_run(epochs=3)
    real_record, real_save, real_publish = (
        runs.record_epoch,
        artifacts.save_model,
        SideChannel.publish,
    )
    seen: list[tuple[str, int, bool, list[int], list[int]]] = []
    published: list[int] = []  # handed to the side channel, which writes Redis on its own thread

    def look(step: str, epoch: int) -> None:
        checkpoint = artifacts.checkpoint_path(settings, run_id, epoch)
        seen.append(
            (step, epoch, checkpoint.is_file(), epoch_numbers(database, run_id), published[:])
        )

    def record(session: Any, run: str, epoch: int, *args: Any, **kwargs: Any) -> bool:
        look("sql", epoch)
        return real_record(session, run, epoch, *args, **kwargs)

    def save(model: keras.Model, path: Path, fence: Any = None) -> bool:
        if path.parent.name == "checkpoints":
            look("checkpoint", int(path.stem.split("-")[1]))
        return real_save(model, path, fence)

    def publish(self: SideChannel, event: dict[str, Any]) -> None:
        if event["type"] == "epoch":
            published.append(event["epoch"])
        real_publish(self, event)

    monkeypatch.setattr(runs, "record_epoch", record)
    monkeypatch.setattr(artifacts, "save_model", save)
    monkeypatch.setattr(SideChannel, "publish", publish)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    # At an epoch's SQL write neither its event nor its checkpoint is out; at
    # its checkpoint both its row and its event are.
    assert seen == [
        ("sql", 1, False, [], []),
        ("checkpoint", 1, False, [1], [1]),
        ("sql", 2, False, [1], [1]),
        ("checkpoint", 2, False, [1, 2], [1, 2]),
        ("sql", 3, False, [1, 2], [1, 2]),
        ("checkpoint", 3, False, [1, 2, 3], [1, 2, 3]),
    ]


def test_partial_files_have_their_writers_names_and_old_ones_are_pruned(
    settings: Settings, tmp_path: Path
) -> None:
    run_id = "abc123"
    folder = artifacts.checkpoint_path(settings, run_id, 1).parent
    names: list[str] = []
    for _ in range(2):  # two writers of one file never share a temporary file
        artifacts.replace_into(
            folder / "x.txt", lambda partial: (names.append(partial.name), partial.write_text("x"))
        )
    assert len(set(names)) == 2 and all(name.startswith(".partial-") for name in names)
    abandoned, fresh = folder / ".partial-1-dead-epoch-0001.keras", folder / names[0]
    abandoned.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    old = time.time() - artifacts.ABANDONED_S - 60
    os.utime(abandoned, (old, old))
    # A fenced write leaves nothing behind either.
    assert not artifacts.replace_into(folder / "y.txt", lambda p: p.write_text("y"), lambda: False)
    artifacts.prune_checkpoints(settings, run_id, 5)
    assert sorted(path.name for path in folder.iterdir()) == [fresh.name, "x.txt"]
