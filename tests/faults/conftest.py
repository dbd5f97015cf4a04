"""Faults injected for real: a redis-server of each test's own (append-only,
on a fixed port, so it can be stopped and started again), real Celery worker
processes (the CLI's command line) to SIGKILL, and a real uvicorn API to
restart. Runs train the tiny network on the tiny dataset of tests/worker,
with many short epochs so that there is a "mid-run" to hit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from backend import events
from backend.cli.parts import api_argv, worker_argv
from backend.db import Database
from backend.settings import Settings
from tests.conftest import RedisServer, free_port, stop_process, wait_for
from tests.worker.conftest import dataset_id, get_run, make_dataset, make_run  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
# Lease TTL 3 s, renewed every 1 s; sweeps every 1 s, requeue after 2 s missing.
HEARTBEAT_S = "1.0"


@pytest.fixture
def redis_url(redis_server_own: RedisServer) -> str:
    """The test's own redis-server, for every fixture built on ``redis_url``."""
    return redis_server_own.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
    yield client
    client.close()


def child_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CURVELAB_DATA_DIR": str(settings.data_dir),
        "CURVELAB_REDIS_URL": settings.redis_url,
        "CURVELAB_DATABASE_URL": settings.sqlalchemy_url,
        "CURVELAB_WORKER_HEARTBEAT_S": HEARTBEAT_S,
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


StartWorker = Callable[[str], Worker]


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[StartWorker]:
    """Start real worker processes; each stopped (or already killed) at the end."""
    started: list[Worker] = []

    def start(name: str = "w1") -> Worker:
        log = tmp_path / f"worker-{name}.log"
        quiet = ["--without-gossip", "--without-mingle"]
        with log.open("ab") as output:
            process = subprocess.Popen(
                [*worker_argv(), f"--hostname={name}@faults", *quiet],
                cwd=REPO,
                env=child_env(settings),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        started.append(Worker(name, process, log))
        return started[-1]

    yield start
    for worker in started:  # all told at once: warm shutdowns in parallel
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in started:
        stop_process(worker.process, grace=20)


def wait_ready(redis: Redis, *workers: Worker, timeout: float = 60) -> None:
    """Until every worker's heartbeat key is in Redis (it consumes from then on)."""

    def ready() -> bool:
        for worker in workers:
            if worker.process.poll() is not None:
                raise AssertionError(f"worker {worker.name} exited:\n{worker.tail()}")
        return all(redis.exists(events.worker_key(f"{w.name}@faults")) for w in workers)

    wait_for(ready, timeout=timeout, interval=0.1, what="the workers to be ready")


@dataclass
class Api:
    url: str
    port: int
    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                api_argv("127.0.0.1", self.port),
                cwd=REPO,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._answers, timeout=60, interval=0.1, what="the API to answer")

    def stop(self) -> None:
        """SIGTERM, as a restart does: open SSE streams are cut after the
        API's graceful timeout."""
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM, grace=20)
            self.process = None

    def kill(self) -> None:
        """Gone at once, open connections cut: a crash, or a restart that
        does not wait for streaming clients."""
        if self.process is not None:
            stop_process(self.process, signal.SIGKILL)
            self.process = None

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the API exited:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture
def api_process(settings: Settings, tmp_path: Path) -> Iterator[Api]:
    """A real uvicorn serving the API on a fixed port (started by the test)."""
    port = free_port()
    api = Api(f"http://127.0.0.1:{port}", port, tmp_path / "api.log", child_env(settings))
    yield api
    api.kill()


class SseReader:
    """A hand-written SSE client in a thread: reads a run's events, and on a
    lost connection reconnects with Last-Event-ID until the final status."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received: list[dict[str, Any]] = []  # {"id", "event", "data"}
        self.connections = 0
        self.last_id: str | None = None
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SseReader:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.done.is_set(), "the SSE reader did not see the final status"

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + 300
            while not self.done.is_set() and time.monotonic() < deadline:
                try:
                    self._read_once()
                except httpx.HTTPError:
                    time.sleep(0.2)  # the API is away: try again, as EventSource does
        except BaseException as exc:  # reported by join
            self.error = exc

    def _read_once(self) -> None:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        timeout = httpx.Timeout(5, read=30)
        with httpx.stream("GET", self.url, headers=headers, timeout=timeout) as reply:
            reply.raise_for_status()
            self.connections += 1
            fields: dict[str, str] = {}
            for line in reply.iter_lines():
                if line:
                    if not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                    continue
                if "data" in fields:
                    self._dispatch(fields)
                fields = {}

    def _dispatch(self, fields: dict[str, str]) -> None:
        data = json.loads(fields["data"])
        if "id" in fields:
            self.last_id = fields["id"]
        self.received.append({"id": fields.get("id"), "event": fields.get("event"), "data": data})
        if data.get("type") == "status" and data.get("status") in events.FINAL_STATUSES:
            self.done.set()


def statuses(redis: Redis, run_id: str) -> list[dict[str, Any]]:
    entries = redis.xrange(events.stream_key(run_id))
    decoded = [events.decode(fields) for _, fields in entries]
    return [event for event in decoded if event["type"] == "status"]


def final_status(database: Database, run_id: str, *workers: Worker) -> str | None:
    for worker in workers:
        if worker.process.poll() is not None:
            raise AssertionError(f"worker {worker.name} exited:\n{worker.tail()}")
    status = get_run(database, run_id).status
    return status if status in events.FINAL_STATUSES else None
