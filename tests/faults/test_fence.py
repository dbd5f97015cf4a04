"""The fence, for real: a trainer that is not its run's current attempt
writes nothing, however it got there. Real worker processes, frozen with
SIGSTOP and woken with SIGCONT, against real Redis and SQL; and two starts
of one run at once, on SQLite and PostgreSQL, that must get two attempts."""

from __future__ import annotations

import hashlib
import signal
import threading
from pathlib import Path
from typing import Any

import keras
import pytest
from redis import Redis

from backend import artifacts, evaluations, events, runs
from backend.db import Database
from backend.queue import enqueue_training, make_celery
from backend.settings import Settings
from tests.conftest import BOTH_DATABASES, wait_for
from tests.faults import conftest as faults_conftest
from tests.faults.conftest import StartWorker, Worker, final_status, statuses, wait_ready
from tests.worker.conftest import STEPS, MakeRun, epoch_numbers, get_run, stream

pytestmark = pytest.mark.faults

EPOCHS = 12


def _holder(redis: Redis, run_id: str) -> str:
    value = redis.get(events.lease_key(run_id))
    return value.decode() if value else ""


def _trainer_and_spare(redis: Redis, run_id: str, *workers: Worker) -> tuple[Worker, Worker]:
    holder = _holder(redis, run_id)
    first, second = workers
    return (first, second) if f":{first.process.pid}:" in holder else (second, first)


def _freeze_after_an_epoch(database: Database, run_id: str, worker: Worker) -> int:
    """SIGSTOP just after an epoch's commit, so that the frozen process holds
    no SQLite write lock (which would stall every writer until it wakes)."""
    done = get_run(database, run_id).epochs_done
    wait_for(
        lambda: get_run(database, run_id).epochs_done > done,
        timeout=30,
        interval=0.005,
        what="an epoch's end",
    )
    worker.process.send_signal(signal.SIGSTOP)
    return done + 1


def _gave_up(worker: Worker, run_id: str) -> bool:
    """The woken worker's task for the run has returned "lost"."""
    log = worker.log.read_text(errors="replace")
    return f"curvelab.train[{run_id}] succeeded in" in log and "'lost'" in log


def _outcome(settings: Settings, database: Database, redis: Redis, run_id: str) -> dict[str, Any]:
    """Everything a trainer can write about a run: its files (bytes and
    mtimes), its SQL row, epochs, batch points and evaluations, its stream."""
    folder = settings.runs_dir / run_id
    files = {
        str(path.relative_to(folder)): (
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(folder.rglob("*"))
        # A file half-written when the process froze is its own, never renamed in.
        if path.is_file() and not path.name.startswith(".partial-")
    }
    run = get_run(database, run_id)
    with database.session() as session:
        rows = runs.epoch_rows(session, run_id)
        points = runs.batch_rows(session, run_id)
        kept = {
            weights: (row.epoch, row.created_at, row.body)
            for weights, row in evaluations.stored(session, run_id).items()
        }
    return {
        "files": files,
        "run": (run.status, run.attempt, run.holder, run.epochs_done, run.finished_at, run.error),
        "epochs": rows,
        "batches": points,
        "evaluations": kept,
        "stream": redis.xrange(events.stream_key(run_id)),
    }


def _model_steps(path: Path) -> int:
    return int(keras.models.load_model(path).optimizer.iterations)


def test_a_trainer_woken_after_its_successor_finished_writes_nothing(
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
        lambda: get_run(database, run_id).epochs_done >= 2,
        timeout=90,
        interval=0.05,
        what="two epochs",
    )
    frozen, spare = _trainer_and_spare(redis_client, run_id, first, second)
    frozen_at = _freeze_after_an_epoch(database, run_id, frozen)
    try:
        # Its lease expires, a sweeper queues the run again, the spare resumes
        # it and finishes it, while the first worker sleeps through all of it.
        status = wait_for(
            lambda: final_status(database, run_id, spare), timeout=120, what="the run to finish"
        )
        assert status == "succeeded", spare.tail()
        assert frozen_at < EPOCHS
        finished = _outcome(settings, database, redis_client, run_id)
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    # Woken: its lease is gone, and SQL says a later attempt finished the run.
    wait_for(lambda: _gave_up(frozen, run_id), timeout=60, what="the woken worker to stop")
    wait_for(
        lambda: not redis_client.exists(events.lease_key(run_id)),
        timeout=10,
        what="its claim on the lease to be gone",
    )

    assert _outcome(settings, database, redis_client, run_id) == finished, frozen.tail()
    run = get_run(database, run_id)
    assert (run.status, run.epochs_done) == ("succeeded", EPOCHS)
    assert epoch_numbers(database, run_id) == list(range(1, EPOCHS + 1))
    # The model is the successor's: trained through every step, none twice.
    assert _model_steps(settings.runs_dir / run_id / artifacts.MODEL_FILE) == EPOCHS * STEPS
    with database.session() as session:
        assert set(evaluations.stored(session, run_id)) == {"final", "best"}
    last = events.decode(redis_client.xrevrange(events.stream_key(run_id), count=1)[0][1])
    assert (last["type"], last["status"]) == ("status", "succeeded")
    woken = frozen.log.read_text(errors="replace")
    assert "lease not taken back" in woken or "writes nothing more" in woken, woken[-3000:]


def test_a_trainer_woken_while_its_successor_trains_writes_nothing(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Leases of 6 s: the successor, frozen too while the stale one wakes,
    # keeps its run all through (no sweep requeues it meanwhile).
    monkeypatch.setattr(faults_conftest, "HEARTBEAT_S", "2.0")
    run_id = make_run(epochs=EPOCHS)
    first, second = start_worker("w1"), start_worker("w2")
    wait_ready(redis_client, first, second)
    enqueue_training(make_celery(settings), run_id)
    wait_for(
        lambda: get_run(database, run_id).epochs_done >= 2,
        timeout=90,
        interval=0.05,
        what="two epochs",
    )
    stale, successor = _trainer_and_spare(redis_client, run_id, first, second)
    _freeze_after_an_epoch(database, run_id, stale)
    try:
        wait_for(
            lambda: f":{successor.process.pid}:" in _holder(redis_client, run_id),
            timeout=60,
            what="the spare worker to take the run",
        )
        taken_at = get_run(database, run_id).epochs_done
        wait_for(
            lambda: get_run(database, run_id).epochs_done >= taken_at + 1,
            timeout=60,
            what="the successor to train on",
        )
        attempt = get_run(database, run_id).attempt  # the successor's, once it records
        # With the successor frozen for a moment, whatever changes while the
        # stale trainer is awake is the stale trainer's doing.
        _freeze_after_an_epoch(database, run_id, successor)
        try:
            assert get_run(database, run_id).epochs_done < EPOCHS
            before = _outcome(settings, database, redis_client, run_id)
            stale.process.send_signal(signal.SIGCONT)
            wait_for(lambda: _gave_up(stale, run_id), timeout=30, what="the stale worker to stop")
            after = _outcome(settings, database, redis_client, run_id)
        finally:
            successor.process.send_signal(signal.SIGCONT)
    finally:
        stale.process.send_signal(signal.SIGCONT)
    # (A shared temporary name once let the woken trainer finish its write
    # into the checkpoint its successor had renamed into place.)
    changed = sorted(
        name
        for name in before["files"].keys() | after["files"].keys()
        if before["files"].get(name) != after["files"].get(name)
    )
    assert not changed, (changed, stale.tail())
    assert after == before, stale.tail()
    assert after["run"][:3] == ("running", attempt, before["run"][2])
    assert "is held by" in stale.log.read_text(errors="replace")

    status = wait_for(
        lambda: final_status(database, run_id, successor), timeout=120, what="the run to finish"
    )
    assert status == "succeeded", successor.tail()
    run = get_run(database, run_id)
    assert (run.attempt, run.epochs_done) == (attempt, EPOCHS)
    assert epoch_numbers(database, run_id) == list(range(1, EPOCHS + 1))
    assert _model_steps(settings.runs_dir / run_id / artifacts.MODEL_FILE) == EPOCHS * STEPS
    # After each "running", epochs and batch points go strictly forward from
    # where it says the run resumes: no trainer wrote behind another.
    segments: list[tuple[int, list[int], list[int]]] = [(1, [], [])]
    for event in stream(redis_client, run_id):
        if event["type"] == "status" and event["status"] == "running":
            segments.append((int(event.get("resumed_at_epoch") or 1), [], []))
        elif event["type"] == "epoch":
            segments[-1][1].append(event["epoch"])
        elif event["type"] == "batch":
            segments[-1][2].append(event["step"])
    for start, epoch_list, steps in segments:
        assert epoch_list == list(range(start, start + len(epoch_list)))
        assert steps == sorted(set(steps))
    assert segments[-1][1][-1] == EPOCHS
    changes = [(e["status"], e.get("reason")) for e in statuses(redis_client, run_id)]
    rewind = [("running", None)] if len(changes) == 5 else []
    assert changes == [
        ("running", None),
        ("queued", "worker lost"),
        ("running", None),
        *rewind,
        ("succeeded", None),
    ]


@BOTH_DATABASES
def test_concurrent_starts_take_distinct_attempts(database: Database, make_run: MakeRun) -> None:
    run_id = make_run()
    starters = 8
    ready = threading.Barrier(starters)
    taken: dict[str, int] = {}
    errors: list[BaseException] = []

    def start(holder: str) -> None:
        try:
            with database.session() as session:
                ready.wait(10)
                run = runs.mark_running(session, None, run_id, holder=holder)
                assert run is not None
                taken[holder] = run.attempt
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(f"w{i}",)) for i in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(taken.values()) == list(range(1, starters + 1))
    run = get_run(database, run_id)
    # The row names the holder of the last attempt: the only one that may record.
    assert (run.status, run.attempt) == ("running", starters)
    assert taken[run.holder or ""] == starters
    with database.session() as session:
        assert runs.record_epoch(session, run_id, 1, {"loss": 1.0}, [], attempt=starters)
        assert not runs.record_epoch(session, run_id, 2, {"loss": 1.0}, [], attempt=starters - 1)
