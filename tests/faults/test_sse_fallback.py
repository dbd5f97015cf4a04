"""SSE when the stream lost events SQL holds: flushed, trimmed, a gap, or
Redis down. SQL's epochs fill in; a client never misses one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from backend import events, runs
from backend.db import Database
from tests.conftest import RedisServer

pytestmark = pytest.mark.faults

TINY = {"image_size": [16, 16], "filters": [4, 8], "epochs": 4, "batch_size": 8}


def _sse(text: str) -> list[dict[str, Any]]:
    parsed = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            parsed.append({"id": fields.get("id"), **json.loads(fields["data"])})
    return parsed


def _epochs(sent: list[dict[str, Any]]) -> list[int]:
    return [e["epoch"] for e in sent if e["type"] == "epoch"]


@pytest.fixture
def trained(api: TestClient, make_dataset_row, database: Database, redis_client: Redis):
    """A run of ``epochs`` epochs, recorded and published as a worker does;
    ``skip`` epochs are recorded in SQL but never reach the stream."""

    def train(epochs: int = 4, skip: tuple[int, ...] = (), final: bool = True) -> str:
        body = {"dataset_id": make_dataset_row(), "config": TINY}
        run_id = api.post("/api/runs", json=body).json()["id"]
        with database.session() as session:
            runs.mark_running(session, redis_client, run_id)
            for epoch in range(1, epochs + 1):
                values = {"loss": 1.0 / epoch}
                for step in (2 * epoch - 1, 2 * epoch):  # two steps an epoch
                    events.publish(redis_client, run_id, events.batch_event(step, step / 2, values))
                runs.record_epoch(session, run_id, epoch, values, [])
                if epoch not in skip:
                    events.publish(redis_client, run_id, events.epoch_event(epoch, values))
            if final:
                runs.finish(session, redis_client, run_id, "succeeded")
        return run_id

    return train


def test_a_flushed_stream_is_replayed_from_sql(
    api: TestClient, trained, redis_client: Redis
) -> None:
    run_id = trained()
    redis_client.flushall()
    sent = _sse(api.get(f"/api/runs/{run_id}/events").text)
    assert [(e["id"], e["type"], e.get("epoch")) for e in sent] == [
        ("0-1", "epoch", 1),
        ("0-2", "epoch", 2),
        ("0-3", "epoch", 3),
        ("0-4", "epoch", 4),
        (None, "status", None),  # from SQL too: the stream's final status is gone
    ]
    assert (sent[-1]["status"], sent[-1]["epochs_done"]) == ("succeeded", 4)
    # Resuming from a SQL id: the epochs after it.
    later = _sse(api.get(f"/api/runs/{run_id}/events", headers={"Last-Event-ID": "0-2"}).text)
    assert _epochs(later) == [3, 4] and later[-1]["status"] == "succeeded"


def test_a_lost_epoch_between_two_is_filled_in(api: TestClient, trained) -> None:
    run_id = trained(skip=(2,))
    sent = _sse(api.get(f"/api/runs/{run_id}/events").text)
    assert _epochs(sent) == [1, 2, 3, 4]
    filled = next(e for e in sent if e["type"] == "epoch" and e["epoch"] == 2)
    assert filled["id"] is None and filled["loss"] == 0.5
    # Stream ids elsewhere, in order: the client resumes from them as before.
    ids = [e["id"] for e in sent if e["id"] is not None]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    # Resuming just after epoch 1: epoch 2 from SQL, then the stream's.
    after_one = next(e["id"] for e in sent if e["type"] == "epoch" and e["epoch"] == 1)
    later = _sse(api.get(f"/api/runs/{run_id}/events", headers={"Last-Event-ID": after_one}).text)
    assert _epochs(later) == [2, 3, 4]


def test_a_stream_trimmed_past_the_client_replays_sql_then_the_rest(
    api: TestClient, trained, redis_client: Redis
) -> None:
    run_id = trained()
    key = events.stream_key(run_id)
    first_id = redis_client.xrange(key, count=2)[1][0].decode()
    redis_client.xtrim(key, maxlen=3, approximate=False)  # epoch 4's batch, epoch 4, status
    sent = _sse(api.get(f"/api/runs/{run_id}/events", headers={"Last-Event-ID": first_id}).text)
    assert _epochs(sent) == [1, 2, 3, 4]  # from SQL; the stream's epoch 4 not again
    assert [e["id"] for e in sent if e["type"] == "epoch"] == ["0-1", "0-2", "0-3", "0-4"]
    assert sent[-1]["status"] == "succeeded" and sent[-1]["id"] is not None


def test_with_redis_down_the_epochs_and_the_end_come_from_sql(
    api: TestClient, trained, redis_server_own: RedisServer
) -> None:
    run_id = trained()
    redis_server_own.stop()
    sent = _sse(api.get(f"/api/runs/{run_id}/events").text)
    assert _epochs(sent) == [1, 2, 3, 4]
    assert sent[-1]["status"] == "succeeded"


def test_a_rewound_epoch_replaces_the_one_sent_from_sql(
    api: TestClient, trained, redis_client: Redis
) -> None:
    """Epochs 1..3 from SQL (the stream lost its head), then the worker's
    rewind on the stream: epoch 3 trained again, new values, forwarded."""
    run_id = trained(epochs=3, final=False)
    redis_client.flushall()
    new_three = {"loss": 0.25}
    for event in (
        events.status_event("running", resumed_at_epoch=3),
        events.epoch_event(3, new_three),
        events.status_event("succeeded", epochs_done=3),
    ):
        events.publish(redis_client, run_id, event)
    sent = _sse(api.get(f"/api/runs/{run_id}/events").text)
    assert [(e["type"], e.get("epoch"), e.get("loss")) for e in sent] == [
        ("epoch", 1, 1.0),
        ("epoch", 2, 0.5),
        ("epoch", 3, 1 / 3),  # from SQL, before the rewind
        ("status", None, None),
        ("epoch", 3, 0.25),  # the stream's: it replaces the one above
        ("status", None, None),
    ]
    assert sent[3]["resumed_at_epoch"] == 3 and sent[-1]["status"] == "succeeded"


def test_a_client_resuming_after_a_rewind_gets_the_new_epoch(
    api: TestClient, trained, database: Database, redis_client: Redis
) -> None:
    """A client that holds epochs 1..3 from SQL (``0-3``) comes back after
    the run rewound to epoch 2 (``runs.rewind``) and trained epoch 3 again."""
    run_id = trained(epochs=3, final=False)
    redis_client.flushall()
    with database.session() as session:
        runs.rewind(session, redis_client, run_id, 2)
        runs.record_epoch(session, run_id, 3, {"loss": 0.25}, [])
        events.publish(redis_client, run_id, events.epoch_event(3, {"loss": 0.25}))
        runs.finish(session, redis_client, run_id, "succeeded")
    sent = _sse(api.get(f"/api/runs/{run_id}/events", headers={"Last-Event-ID": "0-3"}).text)
    assert [(e["type"], e.get("epoch"), e.get("loss")) for e in sent] == [
        ("status", None, None),
        ("epoch", 3, 0.25),
        ("status", None, None),
    ]
    assert sent[0]["resumed_at_epoch"] == 3 and sent[-1]["status"] == "succeeded"
