"""Nothing stranded in the queue: a run queued in SQL whose message is not in
the broker (never sent, deleted from the broker's list, lost to FLUSHALL, or
not sent again by a worker that shut down) reaches a worker, through the
worker's queue reconciler, and trains to the end with contiguous epochs;
runs that simply wait behind a running one are not sent again."""

from __future__ import annotations

import signal

import pytest
from redis import Redis

from backend.db import Database
from backend.queue import QUEUE, broker_view, enqueue_training, make_celery
from backend.settings import Settings
from tests.conftest import wait_for
from tests.faults.conftest import StartWorker, Worker, final_status, statuses, wait_ready
from tests.worker.conftest import MakeRun, epoch_numbers, get_run

pytestmark = pytest.mark.faults

RESEND_S = "2"


@pytest.fixture(autouse=True)
def _fast_resend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started by these tests re-send a stranded run after 2 s."""
    monkeypatch.setenv("CURVELAB_QUEUE_RESEND_S", RESEND_S)


def _received(worker: Worker, run_id: str) -> int:
    """How many deliveries of the run the worker took."""
    return worker.log.read_text(errors="replace").count(f"curvelab.train[{run_id}] received")


def _succeeds(database: Database, run_id: str, epochs: int, *workers: Worker) -> None:
    status = wait_for(
        lambda: final_status(database, run_id, *workers), timeout=120, what="the run to finish"
    )
    assert status == "succeeded", workers[0].tail()
    assert epoch_numbers(database, run_id) == list(range(1, epochs + 1))


def test_a_message_never_sent_or_deleted_from_the_broker_is_sent_again(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    start_worker: StartWorker,
) -> None:
    never_sent = make_run()  # the API died between its commit and send_task
    deleted = make_run()
    enqueue_training(make_celery(settings), deleted)
    message = redis_client.lindex(QUEUE, 0)
    assert isinstance(message, bytes)
    assert redis_client.lrem(QUEUE, 0, message.decode()) == 1
    assert not broker_view(redis_client).waiting

    worker = start_worker("w1")
    wait_ready(redis_client, worker)
    for run_id in (never_sent, deleted):
        _succeeds(database, run_id, 3, worker)
        assert _received(worker, run_id) == 1
        assert [e["status"] for e in statuses(redis_client, run_id)] == ["running", "succeeded"]
    assert "its message is not in the broker; sent again" in worker.log.read_text()


def test_flushall_with_runs_waiting_behind_a_running_one(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    start_worker: StartWorker,
) -> None:
    worker = start_worker("w1")
    wait_ready(redis_client, worker)
    celery = make_celery(settings)
    first = make_run(epochs=30)
    waiting = [make_run(), make_run()]
    for run_id in (first, *waiting):
        enqueue_training(celery, run_id)
    wait_for(lambda: get_run(database, first).epochs_done >= 2, timeout=60, what="two epochs")
    assert broker_view(redis_client).waiting == set(waiting)

    redis_client.flushall()

    # Sent again while the first run still trains, once: later looks find
    # them waiting in the list.
    wait_for(
        lambda: broker_view(redis_client).waiting == set(waiting),
        timeout=30,
        what="the waiting runs to be sent again",
    )
    assert get_run(database, first).status == "running"
    for run_id in (first, *waiting):
        _succeeds(database, run_id, get_run(database, run_id).config["epochs"], worker)
    for run_id in waiting:
        assert _received(worker, run_id) == 1
    assert not broker_view(redis_client).waiting


def test_a_shutdown_requeue_whose_message_is_lost_resumes(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    start_worker: StartWorker,
) -> None:
    epochs = 12
    first = start_worker("w1")
    wait_ready(redis_client, first)
    run_id = make_run(epochs=epochs)
    enqueue_training(make_celery(settings), run_id)
    wait_for(lambda: get_run(database, run_id).epochs_done >= 2, timeout=60, what="two epochs")

    first.process.send_signal(signal.SIGTERM)  # it stops at the next batch and queues the run
    first.process.wait(60)
    assert get_run(database, run_id).status == "queued"
    assert "worker shutting down; queued again to resume" in first.log.read_text()
    # ... but the message it sent never made it (a broker that went away
    # just then): gone from the list before anyone takes it.
    assert broker_view(redis_client).waiting == {run_id}
    redis_client.delete(QUEUE)
    done = get_run(database, run_id).epochs_done

    second = start_worker("w2")
    wait_ready(redis_client, second)
    _succeeds(database, run_id, epochs, second)
    assert _received(second, run_id) == 1
    assert get_run(database, run_id).resumed_at_epoch == done + 1
