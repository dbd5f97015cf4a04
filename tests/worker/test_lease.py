"""The run lease and the sweep that requeues orphaned runs, against the
suite's Redis and SQL, with a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from backend import artifacts, events, runs
from backend.db import Database
from backend.queue import QUEUE, make_celery
from backend.settings import Settings
from tests.conftest import wait_for
from tests.worker.conftest import MakeRun, get_run, set_run, stream
from worker.lease import LeaseTiming, RunLease
from worker.sweeper import LeaseSweeper
from worker.training.runner import run_training

FAST = LeaseTiming(renew_s=0.05, ttl_s=0.5, sweep_s=0.05, grace_s=1.0)


def test_one_holder_at_a_time_and_only_the_holder_renews_or_releases(
    redis_client: Redis,
) -> None:
    mine, theirs = RunLease(redis_client, "r1", FAST), RunLease(redis_client, "r1", FAST)
    assert mine.acquire() and not theirs.acquire()
    assert mine.holder() == mine.token
    assert mine.renew() == 1 and 0 < redis_client.pttl(mine.key) <= 500
    assert theirs.renew() == 0
    redis_client.delete(mine.key)  # flushed
    assert mine.renew() == 2 and mine.holder() == mine.token
    theirs.release()  # not theirs to delete
    assert mine.holder() == mine.token
    mine.release()
    assert redis_client.get(mine.key) is None


def test_the_keeper_takes_a_vanished_lease_back_and_gives_up_a_taken_one(
    redis_client: Redis,
) -> None:
    lease = RunLease(redis_client, "r2", FAST)
    assert lease.acquire()
    with lease.kept():
        redis_client.delete(lease.key)
        wait_for(lambda: lease.holder() == lease.token, timeout=2, what="the lease back")
        assert not lease.lost.is_set()
        redis_client.set(lease.key, "another-worker")
        assert lease.lost.wait(2)
    assert redis_client.get(lease.key) == b"another-worker"


def test_a_running_run_without_a_lease_is_requeued_after_the_grace(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
) -> None:
    orphan, held, waiting = make_run(), make_run(), make_run()
    set_run(database, orphan, status="running", epochs_done=2)
    set_run(database, held, status="running")
    RunLease(redis_client, held, FAST).acquire()
    now = [100.0]
    celery = make_celery(settings)
    sweeper = LeaseSweeper(database, redis_client, celery, FAST, clock=lambda: now[0])
    other = LeaseSweeper(database, redis_client, celery, FAST, clock=lambda: now[0])

    assert sweeper.sweep() == [] and other.sweep() == []  # first seen without a lease
    now[0] += 0.9
    assert sweeper.sweep() == []
    now[0] += 0.2
    assert sweeper.sweep() == [orphan]
    assert other.sweep() == []  # one sweeper acts; the run is queued now anyway

    assert get_run(database, orphan).status == "queued"
    assert get_run(database, held).status == "running"
    assert get_run(database, waiting).status == "queued"
    assert redis_client.llen(QUEUE) == 1
    last = stream(redis_client, orphan)[-1]
    assert (last["status"], last["epochs_done"], last["reason"]) == ("queued", 2, "worker lost")


def test_a_lease_back_within_the_grace_is_no_orphan(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    set_run(database, run_id, status="running")
    now = [0.0]
    sweeper = LeaseSweeper(
        database, redis_client, make_celery(settings), FAST, clock=lambda: now[0]
    )
    assert sweeper.sweep() == []  # missing: Redis was flushed
    RunLease(redis_client, run_id, FAST).acquire()  # its holder's next renewal
    now[0] += 5
    assert sweeper.sweep() == []
    redis_client.delete(events.lease_key(run_id))
    now[0] += 0.5
    assert sweeper.sweep() == []  # counting starts again
    assert get_run(database, run_id).status == "running"


def test_an_epoch_behind_the_record_is_refused(database: Database, make_run: MakeRun) -> None:
    run_id = make_run()
    with database.session() as session:
        assert runs.record_epoch(session, run_id, 1, {"loss": 1.0}, [])
        assert runs.record_epoch(session, run_id, 2, {"loss": 0.5}, [])
        # A stale trainer, woken after another took the run on.
        assert not runs.record_epoch(session, run_id, 2, {"loss": 9.0}, [])
        assert [row["loss"] for row in runs.epoch_rows(session, run_id)] == [1.0, 0.5]
    assert get_run(database, run_id).epochs_done == 2


def test_a_trainer_of_an_earlier_delivery_records_nothing(
    database: Database, make_run: MakeRun
) -> None:
    run_id = make_run()
    with database.session() as session:
        first = runs.mark_running(session, None, run_id)
        assert first is not None
        stale = first.attempt
        assert runs.record_epoch(session, run_id, 1, {"loss": 1.0}, [], attempt=stale)
        # Another worker took the run on and started it again from epoch 1's
        # checkpoint; the first trainer, frozen meanwhile, wakes at epoch 2.
        second = runs.mark_running(session, None, run_id)
        assert second is not None and second.attempt == stale + 1
        assert not runs.record_epoch(session, run_id, 2, {"loss": 9.0}, [], attempt=stale)
        assert runs.record_epoch(session, run_id, 2, {"loss": 0.5}, [], attempt=stale + 1)
        assert [row["loss"] for row in runs.epoch_rows(session, run_id)] == [1.0, 0.5]


def test_a_superseded_trainer_writes_no_row_event_checkpoint_or_status(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = make_run(epochs=3)
    real_record = runs.record_epoch

    def record(session: Any, run: str, epoch: int, *args: Any, **kwargs: Any) -> bool:
        if epoch == 2:  # another delivery starts training the run now
            with database.session() as other:
                runs.mark_running(other, None, run)
        return real_record(session, run, epoch, *args, **kwargs)

    monkeypatch.setattr(runs, "record_epoch", record)
    # Nor does it mark the run final: the later delivery will.
    assert run_training(run_id, settings, database, redis_client) == "lost"
    assert get_run(database, run_id).status == "running"
    statuses = [e["status"] for e in stream(redis_client, run_id) if e["type"] == "status"]
    assert statuses == ["running"]  # its own start; no final status
    with database.session() as session:
        assert [row["epoch"] for row in runs.epoch_rows(session, run_id)] == [1]
    assert [e["epoch"] for e in stream(redis_client, run_id) if e["type"] == "epoch"] == [1]
    checkpoints = settings.runs_dir / run_id / artifacts.CHECKPOINTS
    assert sorted(path.name for path in checkpoints.iterdir()) == ["epoch-0001.keras"]
