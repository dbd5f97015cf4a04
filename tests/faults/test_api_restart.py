"""The API restarted mid-run: an SSE client reconnects with Last-Event-ID
and gets exactly the events it missed, neither fewer nor twice."""

from __future__ import annotations

import pytest
from redis import Redis

from backend import events
from backend.db import Database
from backend.queue import enqueue_training, make_celery
from backend.settings import Settings
from tests.conftest import wait_for
from tests.faults.conftest import Api, SseReader, StartWorker, wait_ready
from tests.worker.conftest import MakeRun, get_run

pytestmark = pytest.mark.faults

# Far more than the test waits for (epochs take a fraction of a second): it
# cancels the run once the client is back.
EPOCHS = 1000


def test_an_api_restart_mid_run_costs_an_sse_client_nothing(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    start_worker: StartWorker,
    api_process: Api,
) -> None:
    worker = start_worker("w1")
    api_process.start()
    wait_ready(redis_client, worker)
    run_id = make_run(epochs=EPOCHS)
    enqueue_training(make_celery(settings), run_id)
    reader = SseReader(f"{api_process.url}/api/runs/{run_id}/events").start()
    wait_for(
        lambda: sum(e["event"] == "epoch" for e in reader.received) >= 2,
        timeout=60,
        what="two epochs over SSE",
    )

    api_process.stop()  # SIGTERM: uvicorn cuts the stream after its graceful timeout
    away_from = get_run(database, run_id).epochs_done
    wait_for(
        lambda: get_run(database, run_id).epochs_done >= away_from + 2,
        timeout=30,
        what="epochs while the API is away",
    )
    api_process.start()  # same port
    back_at = get_run(database, run_id).epochs_done
    wait_for(
        lambda: get_run(database, run_id).epochs_done >= back_at + 2,
        timeout=30,
        what="epochs after the API is back",
    )
    redis_client.set(events.cancel_key(run_id), "1")  # ends the run, and so the stream
    reader.join(timeout=120)

    assert reader.connections >= 2
    run = get_run(database, run_id)
    assert run.status == "cancelled"
    entries = redis_client.xrange(events.stream_key(run_id))
    expected = [(entry_id.decode(), events.decode(fields)) for entry_id, fields in entries]
    got = [(e["id"], e["data"]) for e in reader.received]
    assert got == expected  # every event once, in order, with its stream id
    epochs = [data["epoch"] for _, data in got if data["type"] == "epoch"]
    assert epochs == list(range(1, run.epochs_done + 1))
