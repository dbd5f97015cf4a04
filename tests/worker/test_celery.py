"""The Celery wiring against the real broker: a real worker process (the
command line the CLI uses) takes a task sent the way the API sends it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from backend import events
from backend.db import Database
from backend.queue import QUEUE, enqueue_training, make_celery
from backend.settings import Settings
from tests.conftest import wait_for
from tests.worker.conftest import MakeRun, get_run

REPO = Path(__file__).resolve().parents[2]
WORKER_NAME = "curvelab-test@localhost"


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    env = {
        **os.environ,
        "CURVELAB_DATA_DIR": str(settings.data_dir),
        "CURVELAB_REDIS_URL": settings.redis_url,
        "CURVELAB_DATABASE_URL": settings.sqlalchemy_url,
        "CURVELAB_WORKER_HEARTBEAT_S": "0.5",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app:app",
                "worker",
                "--pool=solo",
                "--concurrency=1",
                f"--queues={QUEUE}",
                "--loglevel=INFO",
                "--hostname",
                WORKER_NAME,
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, log
    finally:
        process.terminate()  # warm shutdown: the heartbeat key is removed
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


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
