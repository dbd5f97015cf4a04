"""Redis restarted or flushed mid-run: the training goes on, its curves stay
whole in SQL and on SSE, and the worker takes new tasks once Redis is back."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from backend import events
from backend.db import Database
from backend.queue import enqueue_training, make_celery
from backend.settings import Settings
from tests.conftest import RedisServer, wait_for
from tests.faults.conftest import StartWorker, final_status, statuses, wait_ready
from tests.worker.conftest import MakeRun, epoch_numbers, get_run, stream

pytestmark = pytest.mark.faults

EPOCHS = 25


def _sse(text: str) -> list[dict]:
    parsed = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            parsed.append({**fields, "data": json.loads(fields["data"])})
    return parsed


def test_a_redis_restart_mid_run_loses_nothing(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    redis_server_own: RedisServer,
    make_run: MakeRun,
    start_worker: StartWorker,
) -> None:
    worker = start_worker("w1")
    wait_ready(redis_client, worker)
    run_id = make_run(epochs=EPOCHS)
    enqueue_training(make_celery(settings), run_id)
    wait_for(lambda: get_run(database, run_id).epochs_done >= 3, timeout=60, what="three epochs")

    redis_server_own.stop()  # SIGTERM: it writes its append-only file and exits
    down_at = get_run(database, run_id).epochs_done
    stopped = time.monotonic()
    wait_for(
        lambda: get_run(database, run_id).epochs_done >= down_at + 3,
        timeout=30,
        what="training to go on without Redis",
    )
    time.sleep(max(0.0, 2.0 - (time.monotonic() - stopped)))
    redis_server_own.start()  # same port, same folder: its data comes back

    status = wait_for(
        lambda: final_status(database, run_id, worker), timeout=90, what="the run to finish"
    )
    assert status == "succeeded", worker.tail()
    assert epoch_numbers(database, run_id) == list(range(1, EPOCHS + 1))
    # The side channel kept what Redis refused and published it once back
    # (an XADD cut by the shutdown before its reply may be sent twice).
    published = [e["epoch"] for e in stream(redis_client, run_id) if e["type"] == "epoch"]
    assert list(dict.fromkeys(published)) == list(range(1, EPOCHS + 1))
    assert [e["status"] for e in statuses(redis_client, run_id)] == ["running", "succeeded"]

    # The worker's broker connection came back: it takes and trains a new task.
    second = make_run(epochs=1)
    enqueue_training(make_celery(settings), second)
    status = wait_for(
        lambda: final_status(database, second, worker), timeout=60, what="a task after the restart"
    )
    assert status == "succeeded", worker.tail()


def test_a_flush_mid_run_keeps_the_lease_and_sse_falls_back_to_sql(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    start_worker: StartWorker,
    api: TestClient,
) -> None:
    worker = start_worker("w1")
    wait_ready(redis_client, worker)
    run_id = make_run(epochs=EPOCHS)
    enqueue_training(make_celery(settings), run_id)
    wait_for(lambda: get_run(database, run_id).epochs_done >= 3, timeout=60, what="three epochs")
    before_flush = redis_client.xrevrange(events.stream_key(run_id), count=1)[0][0].decode()

    redis_client.flushall()
    # The holder takes its lease back at its next renewal, before any sweep
    # would count the run as orphaned.
    wait_for(
        lambda: redis_client.exists(events.lease_key(run_id)),
        timeout=5,
        interval=0.05,
        what="the lease to be taken back",
    )

    # From the start: SQL's epochs (ids 0-<epoch>), then the live stream.
    sent = _sse(api.get(f"/api/runs/{run_id}/events").text)  # ends with the run
    assert [e["data"]["epoch"] for e in sent if e["event"] == "epoch"] == list(range(1, EPOCHS + 1))
    assert sent[0]["id"] == "0-1"
    assert sent[-1]["data"]["status"] == "succeeded"
    assert get_run(database, run_id).status == "succeeded"
    assert epoch_numbers(database, run_id) == list(range(1, EPOCHS + 1))
    # Trained once through: no sweep requeued it after the flush.
    assert [e["status"] for e in statuses(redis_client, run_id)] == ["succeeded"]

    # A client that resumes from an id the flush removed gets every epoch from SQL.
    resumed = _sse(
        api.get(f"/api/runs/{run_id}/events", headers={"Last-Event-ID": before_flush}).text
    )
    assert [e["data"]["epoch"] for e in resumed if e["event"] == "epoch"] == list(
        range(1, EPOCHS + 1)
    )
    assert resumed[-1]["data"]["status"] == "succeeded"
