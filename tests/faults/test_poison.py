"""Poison runs end: a run whose every delivery kills its worker is failed
after CURVELAB_MAX_DELIVERY_DEATHS (3) deaths in a row, with what was seen,
and the queue behind it moves on. The worker runs as ``curvelab up`` runs
it: under the Supervisor, which restarts it and records how it died.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from backend.db import Database
from backend.queue import enqueue_training, make_celery
from backend.settings import Settings
from tests.conftest import wait_for
from tests.faults.supervised import SupervisedWorker, memory_cgroup, supervised_worker
from tests.worker.conftest import MakeRun, epoch_numbers, get_run

pytestmark = pytest.mark.faults

MIB = 1024 * 1024


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[SupervisedWorker]:
    yield from supervised_worker(settings, tmp_path / "worker.log")


def _final(database: Database, run_id: str, worker: SupervisedWorker) -> str | None:
    status = get_run(database, run_id).status
    return status if status in {"succeeded", "failed", "cancelled"} else None


def test_a_run_that_kills_every_worker_fails_after_three_and_the_queue_moves_on(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    worker: SupervisedWorker,
) -> None:
    worker.wait_ready(redis_client)
    celery = make_celery(settings)
    poison, behind = make_run(epochs=5), make_run()
    enqueue_training(celery, poison)

    owners = []
    for attempt in (1, 2, 3):
        # Killed as soon as this delivery starts it, as an allocation too
        # big for the machine would.
        wait_for(
            lambda a=attempt: (
                get_run(database, poison).attempt == a
                and get_run(database, poison).status == "running"
            ),
            timeout=90,
            interval=0.05,
            what=f"delivery {attempt} to start the run\n{worker.tail()}",
        )
        pid = worker.pid
        assert pid is not None
        owners.append(f":{pid}")
        if attempt == 3:
            enqueue_training(celery, behind)  # waits behind the poison run
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda p=pid: worker.pid not in (None, p), timeout=30, what="a restart")

    status = wait_for(lambda: _final(database, poison, worker), timeout=60, what="the poison run")
    run = get_run(database, poison)
    assert status == "failed", worker.tail()
    assert run.deaths == 3 and run.attempt == 3
    assert run.error is not None
    assert owners[-1] in run.error
    assert "was killed by signal 9 (SIGKILL) while training epoch 1" in run.error
    assert "3 deliveries in a row" in run.error
    assert "likely out of memory" in run.error

    assert wait_for(lambda: _final(database, behind, worker), timeout=90) == "succeeded"
    assert epoch_numbers(database, behind) == [1, 2, 3]
    assert get_run(database, poison).attempt == 3  # never delivered again
    assert worker.starts == 4


def test_a_run_that_blows_the_workers_memory_limit_fails_with_out_of_memory(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    tmp_path: Path,
) -> None:
    limit = 900 * MIB
    cgroups = memory_cgroup(f"curvelab-test-{os.getpid()}", limit)
    cgroup = next(cgroups)
    workers = supervised_worker(settings, tmp_path / "worker.log", cgroup=cgroup)
    worker = next(workers)
    try:
        beat = worker.wait_ready(redis_client)
        # The worker sees its cgroup's limit, and states 80% of it as its budget.
        assert beat.memory_mb == pytest.approx(0.8 * limit / MIB, rel=0.01)
        # Far past the limit: 64 filters of 256×256 at batch 64 are 1 GiB a
        # layer. Queued straight into SQL: the API's estimate would refuse it.
        run_id = make_run(
            image_size=(256, 256), filters=[64, 128], convs_per_block=2, batch_size=64
        )
        enqueue_training(make_celery(settings), run_id)
        status = wait_for(
            lambda: _final(database, run_id, worker), timeout=240, what="the run to fail"
        )
        run = get_run(database, run_id)
        assert status == "failed", worker.tail()
        assert run.deaths == 3
        assert run.error is not None
        assert "killed by signal 9 (SIGKILL)" in run.error, run.error
        assert "out of memory" in run.error
        assert f"of its {0.8 * limit / MIB:.0f} MiB budget" in run.error
        assert "exited with code -9 (SIGKILL)" in "\n".join(worker.lines)
        print(f"\n{run.error}")
    finally:
        workers.close()
        cgroups.close()
