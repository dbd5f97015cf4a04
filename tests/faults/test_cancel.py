"""Cancel over the API with a real worker: a queued run at once and never
trained, a running one within 5 s (at its next batch), its curves kept."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from backend import events
from backend.db import Database
from backend.queue import enqueue_training, make_celery
from backend.settings import Settings
from tests.conftest import wait_for
from tests.faults.conftest import StartWorker, final_status, statuses, wait_ready
from tests.worker.conftest import MakeRun, epoch_numbers, get_run

pytestmark = pytest.mark.faults

CANCEL_WITHIN_S = 5.0


def test_cancel_a_queued_then_a_running_run(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    start_worker: StartWorker,
    api: TestClient,
) -> None:
    worker = start_worker("w1")
    wait_ready(redis_client, worker)
    celery = make_celery(settings)
    running, waiting = make_run(epochs=500), make_run(epochs=500)
    enqueue_training(celery, running)
    wait_for(lambda: get_run(database, running).epochs_done >= 2, timeout=60, what="two epochs")
    enqueue_training(celery, waiting)  # behind the running one: one task at a time

    reply = api.post(f"/api/runs/{waiting}/cancel")
    assert reply.status_code == 200 and reply.json()["status"] == "cancelled"

    asked = time.monotonic()
    assert api.post(f"/api/runs/{running}/cancel").json()["status"] == "running"
    status = wait_for(
        lambda: final_status(database, running, worker),
        timeout=30,
        interval=0.02,
        what="the running run to stop",
    )
    latency = time.monotonic() - asked
    print(f"\ncancel -> cancelled: {latency:.2f}s")
    assert status == "cancelled"
    assert latency <= CANCEL_WITHIN_S

    done = get_run(database, running).epochs_done
    metrics = api.get(f"/api/runs/{running}/metrics").json()
    assert [row["epoch"] for row in metrics["epochs"]] == list(range(1, done + 1))
    assert epoch_numbers(database, running) == list(range(1, done + 1)) and done >= 2
    assert [e["status"] for e in statuses(redis_client, running)] == ["running", "cancelled"]

    # The cancelled run's message reaches the now idle worker: it never trains.
    wait_for(
        lambda: f"curvelab.train[{waiting}] succeeded in" in worker.log.read_text(),
        timeout=30,
        what="the cancelled run's task to be handled",
    )
    assert epoch_numbers(database, waiting) == []
    assert [e["status"] for e in statuses(redis_client, waiting)] == ["cancelled"]
    assert not redis_client.exists(events.lease_key(waiting))
