"""Fixtures over the real parts: a private redis-server, a temporary data dir,
SQLite (and PostgreSQL where one answers on 127.0.0.1:5432)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from backend.db import Database, Dataset
from backend.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 30) -> None:
    """Ask a child to stop; kill it if it has not within ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@dataclass
class RedisServer:
    """A redis-server of the tests' own on a fixed port, so a test may stop
    and start it again; ``durable``: its data kept across restarts (an
    append-only file in ``folder``)."""

    folder: Path
    durable: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; `make test` installs it")
        options = ["--bind", "127.0.0.1", "--dir", str(self.folder), "--save", ""]
        if self.durable:
            options += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            options += ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), *options], stdout=subprocess.DEVNULL
        )
        client = Redis.from_url(self.url)
        wait_for(lambda: _pings(client), timeout=20, what="redis-server")
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)  # SIGTERM: redis syncs its file and exits
            self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of the suite's own, so tests never touch another's data."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), durable=False)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_server_own(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, that it may stop and start again (data kept)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    yield server
    server.stop()


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture
def redis_url(redis_server: str) -> str:
    Redis.from_url(redis_server).flushdb()
    return redis_server


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


def _postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


BOTH_DATABASES = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
"""Mark a module or test with this to run it on SQLite and on PostgreSQL."""


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite by default; PostgreSQL for tests marked BOTH_DATABASES, when a
    server answers on 127.0.0.1:5432 (a fresh database per test)."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'curvelab.db'}"
        return
    if not _postgres_answers():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import psycopg

    name = f"curvelab_test_{free_port()}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL refused a test database: {exc}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, database_url: str) -> Settings:
    """Settings on a temporary data dir, the suite's Redis, and the test's database."""
    config = Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        database_url=database_url,
        max_upload_mb=64,
    )
    config.ensure_dirs()
    return config


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings.sqlalchemy_url)
    yield db
    db.dispose()


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """The real app (lifespan included) over the test's Redis and SQLite."""
    from backend.api.main import create_app

    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def make_dataset_row(database: Database):
    """Insert a Dataset record directly (for run tests that need no files)."""

    def make(classes: tuple[str, ...] = ("a", "b")) -> str:
        with database.session() as session:
            row = Dataset(
                name="rows-only",
                num_images=10 * len(classes),
                classes=[{"name": c, "count": 10} for c in classes],
                image_shapes=[],
                warnings=[],
            )
            session.add(row)
            session.commit()
            return row.id

    return make
