"""The run lease and the sweep that requeues orphaned runs, against the
suite's Redis and SQL, with a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from backend import artifacts, evaluations, events, runs
from backend.db import Database
from backend.queue import QUEUE, make_celery
from backend.settings import Settings
from tests.conftest import wait_for
from tests.worker.conftest import STEPS, MakeRun, get_run, set_run, stream
from worker.lease import RENEWED, RETAKING, TAKEN, VANISHED, LeaseTiming, RunLease
from worker.sweeper import LeaseSweeper
from worker.training.best import read_best
from worker.training.fence import Fence
from worker.training.runner import run_training

FAST = LeaseTiming(renew_s=0.05, ttl_s=0.5, sweep_s=0.05, grace_s=1.0)


def test_one_holder_at_a_time_and_only_the_holder_renews_or_releases(
    redis_client: Redis,
) -> None:
    mine, theirs = RunLease(redis_client, "r1", FAST), RunLease(redis_client, "r1", FAST)
    assert mine.acquire() and not theirs.acquire()
    assert mine.holder() == mine.token
    assert mine.renew() == RENEWED and 0 < redis_client.pttl(mine.key) <= 500
    assert theirs.renew() == TAKEN
    theirs.release()  # not theirs to delete
    assert mine.holder() == mine.token
    mine.release()
    assert redis_client.get(mine.key) is None


def test_a_renewal_never_recreates_a_vanished_lease(redis_client: Redis) -> None:
    lease = RunLease(redis_client, "r0", FAST)
    assert lease.acquire()
    redis_client.delete(lease.key)  # flushed, or expired while its holder was frozen
    assert lease.renew() == VANISHED
    assert redis_client.get(lease.key) is None
    redis_client.set(lease.key, lease.claim)  # its own claim, on the explicit path
    assert lease.renew() == RETAKING and 0 < redis_client.pttl(lease.key) <= 500
    assert redis_client.get(lease.key) == lease.claim.encode()


def test_the_keeper_takes_a_vanished_lease_back_while_sql_agrees_and_gives_up_a_taken_one(
    redis_client: Redis,
) -> None:
    asked: list[bool] = []

    def still_current() -> bool:
        asked.append(True)
        return True

    lease = RunLease(redis_client, "r2", FAST)
    assert lease.acquire()
    lease.guard(still_current)
    with lease.kept():
        redis_client.delete(lease.key)
        wait_for(lambda: lease.holder() == lease.token, timeout=2, what="the lease back")
        assert asked and not lease.lost.is_set()
        redis_client.set(lease.key, "another-worker")
        assert lease.lost.wait(2)
    assert redis_client.get(lease.key) == b"another-worker"


def test_a_stale_holder_does_not_get_a_vanished_lease_back(
    database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    stale = RunLease(redis_client, run_id, FAST)
    assert stale.acquire()
    with database.session() as session:
        first = runs.mark_running(session, None, run_id, holder=stale.token)
        assert first is not None
        attempt = first.attempt
    assert get_run(database, run_id).holder == stale.token
    stale.guard(Fence(database, run_id, attempt).current)
    # Frozen past its TTL: another worker took the run, trained it and let go.
    redis_client.delete(stale.key)
    with database.session() as session:
        second = runs.mark_running(session, None, run_id, holder="successor")
        assert second is not None and second.attempt == attempt + 1
        assert runs.finish(session, None, run_id, "succeeded", attempt=second.attempt)
    assert get_run(database, run_id).holder == "successor"

    assert not stale.keep_once()  # woken: its next renewal
    assert stale.lost.is_set()
    assert redis_client.get(stale.key) is None  # its claim given up
    assert get_run(database, run_id).status == "succeeded"


def test_a_claim_waits_while_sql_does_not_answer(redis_client: Redis) -> None:
    answers: list[bool | None] = [None, True]

    def still_current() -> bool:
        answer = answers.pop(0)
        if answer is None:
            raise OSError("SQL is away")
        return answer

    lease = RunLease(redis_client, "r3", FAST)
    assert lease.acquire()
    lease.guard(still_current)
    redis_client.delete(lease.key)
    assert lease.keep_once()  # claimed; SQL did not say: the claim is kept
    assert redis_client.get(lease.key) == lease.claim.encode()
    assert lease.keep_once()  # SQL says it is still this holder's
    assert lease.holder() == lease.token and not lease.lost.is_set()


def test_a_holder_whose_lease_another_took_while_it_was_gone_stops(redis_client: Redis) -> None:
    lease = RunLease(redis_client, "r4", FAST)
    assert lease.acquire()
    lease.guard(lambda: True)
    redis_client.delete(lease.key)
    redis_client.set(lease.key, "another-worker")  # took it first
    assert not lease.keep_once() and lease.lost.is_set()
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
    run_id = make_run(epochs=6)
    real_record = runs.record_epoch
    asked: list[int] = []

    def record(session: Any, run: str, epoch: int, *args: Any, **kwargs: Any) -> bool:
        asked.append(epoch)
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
    # It stopped at its first refused write: no later epoch was even offered
    # to SQL, no batch point of it went out, and nothing of the end was written.
    assert asked == [1, 2]
    steps = [e["step"] for e in stream(redis_client, run_id) if e["type"] == "batch"]
    assert steps and max(steps) <= 2 * STEPS
    with database.session() as session:
        assert max(point["step"] for point in runs.batch_rows(session, run_id)) <= STEPS
        assert evaluations.stored(session, run_id) == {}
    folder = settings.runs_dir / run_id
    names = {artifacts.BEST_WEIGHTS_FILE, artifacts.CHECKPOINTS}
    assert {path.name for path in folder.iterdir()} == names  # no model, history, best model
    best = read_best(folder / artifacts.BEST_WEIGHTS_FILE)
    assert best is not None and best.epoch == 1
