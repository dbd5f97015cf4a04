"""A worker SIGKILLed mid-run: another one resumes the run within seconds,
from its last recorded epoch, and no two workers ever train it at once; one
frozen past its lease finds the run taken when it wakes, and stops."""

from __future__ import annotations

import signal
import time

import pytest
from redis import Redis

from backend import events
from backend.db import Database
from backend.queue import enqueue_training, make_celery
from backend.settings import Settings
from tests.conftest import wait_for
from tests.faults.conftest import StartWorker, final_status, statuses, wait_ready
from tests.worker.conftest import MakeRun, epoch_numbers, get_run, stream

pytestmark = pytest.mark.faults

EPOCHS = 20


def _holder(redis: Redis, run_id: str) -> str:
    value = redis.get(events.lease_key(run_id))
    return value.decode() if value else ""


def _tasks_done(log: str, run_id: str) -> int:
    return log.count(f"curvelab.train[{run_id}] succeeded in")


def test_kill_9_mid_run_the_other_worker_resumes_it(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    start_worker: StartWorker,
) -> None:
    run_id = make_run(epochs=EPOCHS)
    first, second = start_worker("w1"), start_worker("w2")
    wait_ready(redis_client, first, second)
    celery = make_celery(settings)
    # Delivered twice at once, one message per worker: one trains, the other
    # finds the lease taken and leaves the run alone.
    enqueue_training(celery, run_id)
    enqueue_training(celery, run_id)
    wait_for(
        lambda: get_run(database, run_id).epochs_done >= 3,
        timeout=90,
        interval=0.1,
        what="three epochs",
    )
    holder = _holder(redis_client, run_id)
    trainer, spare = (first, second) if f":{first.process.pid}:" in holder else (second, first)
    assert f":{trainer.process.pid}:" in holder, holder
    wait_for(
        lambda: "this delivery leaves it alone" in spare.log.read_text(),
        timeout=20,
        what="the duplicate delivery to be refused",
    )

    trainer.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    trainer.process.wait(10)
    done_at_kill = get_run(database, run_id).epochs_done

    wait_for(
        lambda: f":{spare.process.pid}:" in _holder(redis_client, run_id),
        timeout=60,
        interval=0.05,
        what="the spare worker to take the run",
    )
    resumed_s = time.monotonic() - killed
    wait_for(
        lambda: get_run(database, run_id).epochs_done > done_at_kill,
        timeout=60,
        interval=0.05,
        what="a new epoch",
    )
    next_epoch_s = time.monotonic() - killed
    print(f"\nkill -9 -> resumed: {resumed_s:.1f}s; -> next epoch recorded: {next_epoch_s:.1f}s")
    assert resumed_s < 60

    status = wait_for(
        lambda: final_status(database, run_id, spare), timeout=120, what="the run to finish"
    )
    assert status == "succeeded", spare.tail()
    run = get_run(database, run_id)
    assert run.epochs_done == EPOCHS
    assert epoch_numbers(database, run_id) == list(range(1, EPOCHS + 1))
    # Killed between an epoch's record and its checkpoint, the run rewinds to
    # the newest checkpoint and trains that epoch again, and says so.
    rewound = run.resumed_at_epoch == done_at_kill
    assert run.resumed_at_epoch == done_at_kill + (0 if rewound else 1)

    # One "running" per delivery that trained (and one for the rewind), none
    # for the refused one.
    changes = [
        (e["status"], e.get("resumed_at_epoch"), e.get("reason"))
        for e in statuses(redis_client, run_id)
    ]
    assert changes == [
        ("running", None, None),
        ("queued", None, "worker lost"),
        ("running", done_at_kill + 1, None),
        *([("running", done_at_kill, None)] if rewound else []),
        ("succeeded", None, None),
    ]
    # Never two trainers: after each "running", epochs and batch points go
    # strictly forward from where it says the run resumes.
    received = stream(redis_client, run_id)
    segments: list[tuple[int, list[int], list[int]]] = [(1, [], [])]
    for event in received:
        if event["type"] == "status" and event["status"] == "running":
            segments.append((int(event.get("resumed_at_epoch") or 1), [], []))
        elif event["type"] == "epoch":
            segments[-1][1].append(event["epoch"])
        elif event["type"] == "batch":
            segments[-1][2].append(event["step"])
    for start, epochs, steps in segments:
        assert epochs == list(range(start, start + len(epochs)))
        assert steps == sorted(set(steps))
    assert segments[-1][1][-1] == EPOCHS

    # The dead worker's own message comes back after the broker's visibility
    # timeout: by then the run is final, and the delivery touches nothing.
    before = redis_client.xrange(events.stream_key(run_id))
    tasks_done = _tasks_done(spare.log.read_text(), run_id)
    enqueue_training(celery, run_id)
    wait_for(
        lambda: _tasks_done(spare.log.read_text(), run_id) > tasks_done,
        timeout=30,
        what="the late delivery to be handled",
    )
    assert redis_client.xrange(events.stream_key(run_id)) == before
    assert get_run(database, run_id).status == "succeeded"


def test_a_frozen_worker_wakes_to_find_its_run_taken_and_stops(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    start_worker: StartWorker,
) -> None:
    run_id = make_run(epochs=EPOCHS)
    first, second = start_worker("w1"), start_worker("w2")
    wait_ready(redis_client, first, second)
    enqueue_training(make_celery(settings), run_id)
    wait_for(
        lambda: get_run(database, run_id).epochs_done >= 3,
        timeout=90,
        interval=0.1,
        what="three epochs",
    )
    holder = _holder(redis_client, run_id)
    frozen, spare = (first, second) if f":{first.process.pid}:" in holder else (second, first)
    # Frozen just after an epoch's commit, not holding SQLite's write lock
    # (which would stall every writer until it wakes).
    done = get_run(database, run_id).epochs_done
    wait_for(
        lambda: get_run(database, run_id).epochs_done > done,
        timeout=30,
        interval=0.005,
        what="an epoch's end",
    )

    frozen.process.send_signal(signal.SIGSTOP)  # a VM paused, a swap storm
    try:
        wait_for(
            lambda: f":{spare.process.pid}:" in _holder(redis_client, run_id),
            timeout=60,
            what="the spare worker to take the run",
        )
        taken_at = get_run(database, run_id).epochs_done
        wait_for(
            lambda: get_run(database, run_id).epochs_done >= taken_at + 2,
            timeout=60,
            what="the spare to train on",
        )
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    wait_for(
        lambda: f"curvelab.train[{run_id}] succeeded in" in frozen.log.read_text(),
        timeout=30,
        what="the woken worker to give the run up",
    )
    woken = frozen.log.read_text()
    assert f"curvelab.train[{run_id}]" in woken and "s: 'lost'" in woken
    # Whichever of its threads wakes first says why: the lease keeper (the
    # lease is another's) or the recorder (SQL refused its epoch). Either stops it.
    assert "is held by" in woken or "writes nothing more: SQL refused" in woken, woken[-3000:]

    status = wait_for(
        lambda: final_status(database, run_id, spare), timeout=120, what="the run to finish"
    )
    assert status == "succeeded", spare.tail()
    assert epoch_numbers(database, run_id) == list(range(1, EPOCHS + 1))
    # The woken worker touched no status: it only ever had the first delivery.
    # (Frozen after an epoch's record, maybe before its checkpoint: then the
    # spare rewound to the checkpoint before, a second "running".)
    changes = [(e["status"], e.get("reason")) for e in statuses(redis_client, run_id)]
    rewind = [("running", None)] if len(changes) == 5 else []
    assert changes == [
        ("running", None),
        ("queued", "worker lost"),
        ("running", None),
        *rewind,
        ("succeeded", None),
    ]
