"""The queue reconciler and the lease sweeper's count of deaths, against the
suite's Redis and SQL, with clocks the test moves (the fault tests in
tests/faults/ inject the same faults into real worker processes)."""

from __future__ import annotations

import json
from datetime import timedelta

from redis import Redis

from backend import events, runs, workers
from backend.db import Database, utcnow
from backend.queue import (
    QUEUE,
    UNACKED_INDEX_KEY,
    UNACKED_KEY,
    broker_view,
    enqueue_training,
    make_celery,
)
from backend.settings import Settings
from tests.worker.conftest import MakeRun, get_run, set_run
from worker.lease import LeaseTiming, RunLease
from worker.reconciler import QueueReconciler
from worker.sweeper import LeaseSweeper

FAST = LeaseTiming(renew_s=0.05, ttl_s=0.5, sweep_s=0.05, grace_s=1.0)


def _old(database: Database, run_id: str, seconds: float = 120) -> None:
    set_run(database, run_id, queued_at=utcnow() - timedelta(seconds=seconds))


def test_a_queued_run_whose_message_is_nowhere_is_sent_once(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    celery = make_celery(settings)
    lost, young, leased, waiting = make_run(), make_run(), make_run(), make_run()
    for run_id in (lost, leased, waiting):
        _old(database, run_id)
    RunLease(redis_client, leased, FAST).acquire()
    runs_sent = QueueReconciler(database, redis_client, celery, 60)
    enqueue_training(celery, waiting)
    assert runs_sent.reconcile() == [lost]
    assert broker_view(redis_client).waiting == {lost, waiting}
    # Another worker's reconciler, and this one again: it is in the list now.
    assert QueueReconciler(database, redis_client, celery, 60).reconcile() == []
    redis_client.delete(events.resend_key(lost))
    assert runs_sent.reconcile() == []
    assert redis_client.llen(QUEUE) == 2 and get_run(database, young).status == "queued"


def test_an_old_unacked_delivery_with_no_lease_is_sent_again(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    fresh, stale = make_run(), make_run()
    for run_id in (fresh, stale):
        _old(database, run_id)
    now = 1_000_000.0
    for tag, run_id, at in (("t1", fresh, now - 5), ("t2", stale, now - 600)):
        message = {"headers": {"id": run_id}, "properties": {"delivery_tag": tag}}
        redis_client.hset(UNACKED_KEY, tag, json.dumps([message, "", QUEUE]))
        redis_client.zadd(UNACKED_INDEX_KEY, {tag: at})
    reconciler = QueueReconciler(
        database, redis_client, make_celery(settings), 60, clock=lambda: now
    )
    # The fresh one is about to take its lease; the stale one's worker died first.
    assert reconciler.reconcile() == [stale]


def _deliver(database: Database, redis: Redis, run_id: str, holder: str) -> int:
    redis.delete(events.requeue_key(run_id))  # its TTL is real time; the clocks here are not
    with database.session() as session:
        run = runs.mark_running(session, None, run_id)
        assert run is not None
        attempt = run.attempt
    set_run(database, run_id, holder=holder)
    return attempt


def test_three_deaths_in_a_row_fail_the_run_with_what_was_seen(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    now = [0.0]
    sweeper = LeaseSweeper(
        database, redis_client, make_celery(settings), FAST, clock=lambda: now[0], max_deaths=3
    )

    def orphan(holder: str) -> list[str]:
        _deliver(database, redis_client, run_id, holder)
        assert sweeper.sweep() == []
        now[0] += 1.1
        return sweeper.sweep()

    assert orphan("vm:11:aaaaaaaaaaaa") == [run_id]
    assert get_run(database, run_id).deaths == 1
    # A delivery that recorded an epoch before it died begins a new row.
    _deliver(database, redis_client, run_id, "vm:12:bbbbbbbbbbbb")
    with database.session() as session:
        assert runs.record_epoch(session, run_id, 1, {"loss": 1.0}, [])
    sweeper.sweep()
    now[0] += 1.1
    assert sweeper.sweep() == [run_id] and get_run(database, run_id).deaths == 1
    assert orphan("vm:13:cccccccccccc") == [run_id]
    assert get_run(database, run_id).deaths == 2

    workers.record_exit(redis_client, "vm:14", -9)
    workers.record_run_memory(redis_client, run_id, "vm:14", 950.0, 1000.0)
    assert orphan("vm:14:dddddddddddd") == []
    run = get_run(database, run_id)
    assert (run.status, run.deaths) == ("failed", 3)
    assert run.error == (
        "the worker training it (vm:14) was killed by signal 9 (SIGKILL) while training "
        "epoch 2, 3 deliveries in a row; last seen using 950 MiB of its 1000 MiB budget: "
        "likely out of memory; lower image_size, filters, dense_units or batch_size"
    )
    assert sweeper.given_up == [run_id]


def test_a_lost_lease_of_a_live_worker_or_a_clean_exit_is_no_death(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    now = [0.0]
    sweeper = LeaseSweeper(
        database, redis_client, make_celery(settings), FAST, clock=lambda: now[0], max_deaths=1
    )
    _deliver(database, redis_client, run_id, "vm:21:aaaaaaaaaaaa")
    beat = workers.beat_value("vm:21", 1000, 500, run_id, 21)
    redis_client.set(events.worker_key("w@vm"), json.dumps(beat), ex=30)
    sweeper.sweep()
    now[0] += 1.1
    assert sweeper.sweep() == [run_id]  # Redis flushed under a live trainer
    assert get_run(database, run_id).deaths == 0
    assert get_run(database, run_id).status == "queued"

    _deliver(database, redis_client, run_id, "vm:22:bbbbbbbbbbbb")
    workers.record_exit(redis_client, "vm:22", 0)  # stopped on request
    sweeper.sweep()
    now[0] += 1.1
    assert sweeper.sweep() == [run_id]
    assert get_run(database, run_id).deaths == 0
