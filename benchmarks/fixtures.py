"""What the benchmarks run against: a scratch data dir, SQLite, a private
redis-server, the API under uvicorn, the UI under streamlit, and character
datasets.

All real parts, all on loopback, all removed afterwards. Nothing here imports
TensorFlow: the benchmarks that train do so in child processes.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from redis import Redis

from backend import runs
from backend.cli import parts
from backend.cli.supervisor import ChildSpec, spawn, stop_processes
from backend.datasets.ingest import store_dataset
from backend.db import Database, Dataset
from backend.settings import Settings
from backend.synthetic import write_character_zip
from backend.train_config import TrainConfig

# The question's data: 30 characters, 50×55 RGB PNG.
NUM_CLASSES = 30
IMAGE_SIZE = (50, 55)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


@dataclass
class Workspace:
    """A data dir, its SQLite database and a redis-server of our own."""

    root: Path
    settings: Settings
    db: Database
    redis: Redis

    @property
    def env(self) -> dict[str, str]:
        """The environment a child process (API, worker) needs to share it."""
        return {
            **os.environ,
            "CURVELAB_DATA_DIR": str(self.settings.data_dir),
            "CURVELAB_REDIS_URL": self.settings.redis_url,
            "CURVELAB_DATABASE_URL": self.settings.sqlalchemy_url,
            "PYTHONUNBUFFERED": "1",
        }


@contextmanager
def workspace(prefix: str = "curvelab-bench-") -> Iterator[Workspace]:
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        redis_url = stack.enter_context(redis_server(root / "redis"))
        settings = Settings(data_dir=root / "data", redis_url=redis_url)
        settings.ensure_dirs()
        db = Database(settings.sqlalchemy_url)
        stack.callback(db.dispose)
        client = Redis.from_url(redis_url)
        stack.callback(client.close)
        yield Workspace(root=root, settings=settings, db=db, redis=client)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; `make bench` installs it")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(folder)]
    process = spawn(ChildSpec("redis", argv, env=dict(os.environ), log_path=folder / "log"))
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = Redis.from_url(url)
        wait_until(client.ping, 10, "redis-server")
        client.close()
        yield url
    finally:
        stop_processes([process], 10)


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextmanager
def api_server(
    space: Workspace,
    app: str = "backend.api.main:create_app",
    ready_path: str = "/api/health",
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """An app factory under uvicorn, in its own process (the real API by default)."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", app, "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    env = {**space.env, **(extra_env or {})}
    log_path = space.root / f"uvicorn-{port}.log"
    process = spawn(ChildSpec("api", argv, env=env, log_path=log_path))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url + ready_path, timeout=2).status_code == 200, 30, app)
        yield Server(url, process.pid)
    finally:
        stop_processes([process], 10)


@contextmanager
def ui_server(space: Workspace, api_url: str) -> Iterator[Server]:
    """The Streamlit UI on ``api_url``, in its own process, as `curvelab ui`
    starts it (parts: the same argv and environment)."""
    port = free_port()
    argv = parts.ui_argv("127.0.0.1", port, max_upload_mb=space.settings.max_upload_mb)
    log_path = space.root / f"streamlit-{port}.log"
    process = spawn(
        ChildSpec("ui", argv, env=parts.ui_env(os.environ, api_url=api_url), log_path=log_path)
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(url + "/_stcore/health", timeout=2).status_code == 200,
            60,
            "streamlit",
        )
        yield Server(url, process.pid)
    finally:
        stop_processes([process], 10)


def character_zip(
    path: Path, per_class: int, seed: int = 0, num_classes: int = NUM_CLASSES
) -> Path:
    return write_character_zip(
        path,
        num_classes=num_classes,
        per_class=per_class,
        image_size=IMAGE_SIZE,
        mode="RGB",
        seed=seed,
    )


def stored_dataset(space: Workspace, per_class: int, name: str = "characters") -> str:
    """Generate and ingest a character dataset straight through ``store_dataset``
    (the API's ingest is measured on its own); returns its id."""
    archive = character_zip(space.settings.tmp_dir / f"{name}.zip", per_class)
    try:
        with space.db.session() as session:
            return store_dataset(session, archive, name, space.settings).id
    finally:
        archive.unlink()


def queued_run(space: Workspace, dataset_id: str, config: TrainConfig, name: str) -> str:
    with space.db.session() as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise LookupError(f"no dataset {dataset_id}")
        return runs.create_run(session, dataset, config, name).id
