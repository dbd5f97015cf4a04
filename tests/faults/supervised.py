"""A training worker started and restarted the way ``curvelab up`` does it:
under backend.cli.supervisor's Supervisor, whose exit hook records in Redis
how each worker process died (backend/cli/up.py's ``record_worker_exits``).
Optionally inside a cgroup v1 memory controller with a limit, so the
kernel's OOM killer ends it as it would in a container.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis import Redis

from backend import events, workers
from backend.cli.parts import worker_argv
from backend.cli.supervisor import ChildSpec, Supervisor
from backend.cli.up import record_worker_exits
from backend.settings import Settings
from tests.conftest import wait_for
from tests.faults.conftest import REPO, child_env

HOSTNAME = "sup@faults"


@dataclass
class SupervisedWorker:
    supervisor: Supervisor
    log: Path
    lines: list[str] = field(default_factory=list)  # the supervisor's own
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, spec: ChildSpec) -> None:
        self.supervisor.start(spec)
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            self.supervisor.poll()

    @property
    def pid(self) -> int | None:
        return self.supervisor.pid("worker")

    @property
    def starts(self) -> int:
        return self.supervisor.starts("worker")

    def tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(self.lines) + "\n" + text[-chars:]

    def wait_ready(self, redis: Redis, timeout: float = 90) -> WorkerBeatView:
        """Until the current worker process beats (it consumes from then on)."""

        def ready() -> WorkerBeatView | None:
            beat = workers.parse_beat(HOSTNAME, redis.get(events.worker_key(HOSTNAME)))
            pid = self.pid
            if beat is None or pid is None or beat.owner is None:
                return None
            if not beat.owner.endswith(f":{pid}"):
                return None  # the one before, not expired yet
            return WorkerBeatView(beat.owner, beat.memory_mb)

        return wait_for(ready, timeout=timeout, interval=0.1, what="the supervised worker")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.supervisor.stop()


@dataclass(frozen=True)
class WorkerBeatView:
    owner: str
    memory_mb: float | None


def supervised_worker(
    settings: Settings, log: Path, cgroup: Path | None = None, **env: str
) -> Generator[SupervisedWorker]:
    argv = [*worker_argv(), f"--hostname={HOSTNAME}", "--without-gossip", "--without-mingle"]
    if cgroup is not None:
        # The shell joins the cgroup, then becomes the worker: same pid.
        argv = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *argv]
    lines: list[str] = []
    supervisor = Supervisor(
        min_backoff=0.2,
        max_backoff=1.0,
        stable_after=600,
        stop_timeout=20,
        log=lines.append,
        on_exit=record_worker_exits(settings.redis_url),
    )
    worker = SupervisedWorker(supervisor, log, lines)
    spec = ChildSpec("worker", argv, {**child_env(settings), **env}, log, cwd=REPO)
    worker.start(spec)
    try:
        yield worker
    finally:
        worker.stop()


def memory_cgroup(name: str, limit_bytes: int) -> Generator[Path]:
    """A cgroup v1 memory controller under this process's own, with a
    limit; skips the test where none can be made (no v1 controller, not
    root, read-only /sys)."""
    own = None
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                own = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    except OSError:
        pass
    if own is None or not own.is_dir():
        pytest.skip("no cgroup v1 memory controller to put a worker under a memory limit")
    folder = own / name
    try:
        folder.mkdir()
        (folder / "memory.limit_in_bytes").write_text(str(limit_bytes))
        # No swap to page out to instead of being killed.
        if (folder / "memory.swappiness").exists():
            (folder / "memory.swappiness").write_text("0")
    except OSError as exc:
        if folder.is_dir():
            folder.rmdir()
        pytest.skip(f"cannot make a memory cgroup here ({exc}): needs root and a writable /sys")
    try:
        yield folder
    finally:
        # Empty once its processes are gone: those that are left move up.
        for pid in (folder / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (own / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            folder.rmdir()
