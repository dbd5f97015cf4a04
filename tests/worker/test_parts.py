"""The runner's small parts: error messages, run paths, history CSV, the
Redis side channel."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from redis import Redis

from backend import events
from backend.settings import Settings
from worker.training.artifacts import run_dir, write_history
from worker.training.runner import describe_error
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
