"""The Celery wiring against the real broker: a real worker process (the
command line the CLI uses) takes a task sent the way the API sends it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from backend import events
from backend.cli.parts import worker_argv
from backend.db import Database
from backend.queue import enqueue_training, make_celery
from backend.settings import Settings
from tests.conftest import stop_process, wait_for
from tests.worker.conftest import MakeRun, epoch_numbers, get_run, stream

REPO = Path(__file__).resolve().parents[2]
WORKER_NAME = "curvelab-test@localhost"


def _start(settings: Settings, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "CURVELAB_DATA_DIR": str(settings.data_dir),
        "CURVELAB_REDIS_URL": settings.redis_url,
        "CURVELAB_DATABASE_URL": settings.sqlalchemy_url,
        "CURVELAB_WORKER_HEARTBEAT_S": "0.5",
    }
    with log.open("ab") as output:
        return subprocess.Popen(
            [*worker_argv(), "--hostname", WORKER_NAME, "--without-gossip", "--without-mingle"],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def start_worker(
    settings: Settings, tmp_path: Path
) -> Iterator[Callable[[], tuple[subprocess.Popen, Path]]]:
    """Start real worker processes (the CLI's command line); all stopped at the end."""
    started: list[subprocess.Popen] = []
    log = tmp_path / "worker.log"

    def start() -> tuple[subprocess.Popen, Path]:
        started.append(_start(settings, log))
        return started[-1], log

    yield start
    for process in started:
        stop_process(process)  # warm shutdown: the heartbeat key is removed


@pytest.fixture
def worker_process(
    start_worker: Callable[[], tuple[subprocess.Popen, Path]],
) -> tuple[subprocess.Popen, Path]:
    return start_worker()


def test_a_real_worker_trains_a_sent_task(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    worker_process: tuple[subprocess.Popen, Path],
) -> None:
    process, log = worker_process
    run_id = make_run(epochs=2)
    enqueue_training(make_celery(settings), run_id)

    def finished() -> str | None:
        if process.poll() is not None:
            raise AssertionError(f"worker exited:\n{log.read_text()[-3000:]}")
        status = get_run(database, run_id).status
        return status if status in events.FINAL_STATUSES else None

    status = wait_for(finished, timeout=120, interval=0.25, what="the run to finish")
    assert status == "succeeded", log.read_text()[-3000:]
    assert get_run(database, run_id).epochs_done == 2
    # The heartbeat: a key the API's health counts, with a TTL, while the worker lives.
    key = events.worker_key(WORKER_NAME)
    assert redis_client.exists(key), log.read_text()[-3000:]
    assert 0 < redis_client.pttl(key) <= 1500

    process.terminate()
    process.wait(30)
    assert not redis_client.exists(key)


def test_a_worker_asked_to_stop_requeues_its_run_and_the_next_resumes_it(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    start_worker: Callable[[], tuple[subprocess.Popen, Path]],
) -> None:
    run_id = make_run(epochs=500)  # far more than this test waits for
    enqueue_training(make_celery(settings), run_id)
    first, log = start_worker()
    wait_for(
        lambda: get_run(database, run_id).epochs_done >= 2,
        timeout=120,
        interval=0.1,
        what="two epochs",
    )

    first.terminate()  # what `curvelab up` does on Ctrl-C
    assert first.wait(30) == 0, log.read_text()[-3000:]
    run = get_run(database, run_id)
    assert run.status == "queued", log.read_text()[-3000:]
    paused_at = run.epochs_done
    assert [e["status"] for e in stream(redis_client, run_id) if e["type"] == "status"] == [
        "running",
        "queued",
    ]

    start_worker()
    wait_for(
        lambda: get_run(database, run_id).epochs_done >= paused_at + 2,
        timeout=120,
        interval=0.1,
        what="the run to resume and go on",
    )
    run = get_run(database, run_id)
    assert run.status == "running" and run.resumed_at_epoch == paused_at + 1
    redis_client.set(events.cancel_key(run_id), "1")
    wait_for(lambda: get_run(database, run_id).status == "cancelled", timeout=60, what="the cancel")
    done = get_run(database, run_id).epochs_done
    assert epoch_numbers(database, run_id) == list(range(1, done + 1))
