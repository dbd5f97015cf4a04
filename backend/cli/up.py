"""``curvelab up``: Redis (found or started), a worker, the API and the UI,
kept running until Ctrl-C or SIGTERM, then all stopped.

Children write to ``DATA_DIR/logs/<part>.log``; the terminal gets only
curvelab's own lines (where things are, what died and was restarted), so the
worker's TensorFlow chatter never buries them.
"""

from __future__ import annotations

import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import httpx
from redis import Redis

from backend import workers
from backend.cli import parts
from backend.cli.predictor import predict_worker_argv
from backend.cli.redis_server import RedisHandle, RedisUnavailable, find_or_start
from backend.cli.supervisor import ChildSpec, ExitHook, Supervisor, say
from backend.settings import Settings

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class UpOptions:
    data_dir: Path
    host: str
    api_port: int
    ui_port: int
    redis_url: str
    no_ui: bool
    api_token: str | None
    workers: int = 1  # training workers; a sweep trains this many runs at once
    # The API's upload cap, which the UI's file picker follows.
    max_upload_mb: int = Settings.model_fields["max_upload_mb"].default


class _StopFlag:
    """Set by SIGINT/SIGTERM; the main loop checks it between short sleeps."""

    def __init__(self) -> None:
        self.is_set = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.is_set = True


def masked(url: str) -> str:
    """``url`` without its password, for printing."""
    parts_ = urlsplit(url)
    if not parts_.password:
        return url
    netloc = parts_.netloc.replace(f":{parts_.password}@", ":***@")
    return urlunsplit(parts_._replace(netloc=netloc))


def port_free(host: str, port: int) -> bool:
    """True when a server could bind ``host:port`` now (as uvicorn and streamlit will)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def run_up(opts: UpOptions) -> int:
    taken = [
        (what, port)
        for what, port in (("API", opts.api_port), ("UI", opts.ui_port))
        if not (what == "UI" and opts.no_ui) and not port_free(opts.host, port)
    ]
    if taken:
        for what, port in taken:
            say(
                f"port {port} for the {what} is in use on {opts.host}; choose another "
                f"with --{what.lower()}-port"
            )
        return 2
    logs = opts.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Handlers first: a Ctrl-C at any point below still reaches the finally.
    flag = _StopFlag()
    previous = {sig: signal.signal(sig, flag) for sig in (signal.SIGINT, signal.SIGTERM)}
    redis: RedisHandle | None = None
    supervisor = Supervisor()
    try:
        try:
            redis = find_or_start(opts.redis_url, opts.data_dir, log_dir=logs)
        except RedisUnavailable as exc:
            say(str(exc))
            return 1
        _report_redis(redis, opts.redis_url)
        names = parts.worker_names(opts.workers)
        supervisor.on_exit = record_worker_exits(redis.url, tuple(names))
        api_url = parts.http_url(opts.host, opts.api_port)
        env = parts.child_env(data_dir=opts.data_dir, redis_url=redis.url, api_url=api_url)
        for name in names:
            node = f"{name}@%h" if opts.workers > 1 else None
            supervisor.start(ChildSpec(name, parts.worker_argv(node), env, logs / f"{name}.log"))
        supervisor.start(ChildSpec("predictor", predict_worker_argv(), env, logs / "predictor.log"))
        supervisor.start(
            ChildSpec("api", parts.api_argv(opts.host, opts.api_port), env, logs / "api.log")
        )
        if not opts.no_ui:
            ui_argv = parts.ui_argv(opts.host, opts.ui_port, max_upload_mb=opts.max_upload_mb)
            ui_env = parts.ui_env(env, api_url=api_url)  # no token, no store's password
            supervisor.start(ChildSpec("ui", ui_argv, ui_env, logs / "ui.log"))
        say(f"waiting for the API at {api_url} ...")
        with _client(api_url, opts.api_token) as client:
            if not _wait_ready(supervisor, client, flag):
                if flag.is_set:
                    return 0
                say(f"the API did not answer within {READY_TIMEOUT_S:g}s; see {logs / 'api.log'}")
                return 1
            _announce(opts, api_url, redis, logs)
            _watch(supervisor, client, flag)
        return 0
    finally:
        say("stopping ...")
        supervisor.stop()
        if redis is not None:
            redis.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        say("stopped")


def record_worker_exits(redis_url: str, names: tuple[str, ...] = ("worker",)) -> ExitHook:
    """A Supervisor hook that notes in Redis how a training worker exited
    (a signal: SIGKILL from the kernel's OOM killer, ...), under the
    ``host:pid`` its run leases name: the lease sweeper that finds its run
    orphaned says so, and counts it (worker/sweeper.py)."""
    client = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    host = socket.gethostname()

    def record(spec: ChildSpec, pid: int, code: int) -> None:
        if spec.name in names:
            workers.record_exit(client, f"{host}:{pid}", code)

    return record


def _client(api_url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api_url, headers=headers, timeout=httpx.Timeout(3.0))


def _health(client: httpx.Client) -> dict[str, object] | None:
    """The API's health report, or None while it does not answer.

    A 503 is an answer too: the API is up and says what it cannot reach.
    """
    try:
        response = client.get("/api/health")
        body = response.json() if response.status_code in (200, 503) else None
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _wait_ready(supervisor: Supervisor, client: httpx.Client, flag: _StopFlag) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not flag.is_set and time.monotonic() < deadline:
        supervisor.poll()  # an API that crashes on start-up is restarted meanwhile
        health = _health(client)
        if health is not None:
            broken = [part for part in ("redis", "database") if health.get(part) is False]
            if broken:
                say(f"the API answers, but cannot reach: {', '.join(broken)}; see the API's log")
            return True
        time.sleep(0.25)
    return False


def _watch(supervisor: Supervisor, client: httpx.Client, flag: _StopFlag) -> None:
    """Restart what dies until told to stop; say once when a worker has joined."""
    worker_seen = False
    next_check = 0.0
    while not flag.is_set:
        supervisor.poll()
        if not worker_seen and time.monotonic() >= next_check:
            health = _health(client)
            workers = health.get("workers") if health else None
            if isinstance(workers, int) and workers > 0:
                say("a worker is connected; runs will start as soon as they are queued")
                worker_seen = True
            next_check = time.monotonic() + 3.0
        time.sleep(0.2)


def _report_redis(redis: RedisHandle, asked: str) -> None:
    if not redis.own:
        say(f"using the Redis that answers at {masked(redis.url)}")
        return
    moved = "" if redis.url == asked else f" (nothing usable answered at {masked(asked)})"
    say(
        f"started a redis-server of its own at {masked(redis.url)}{moved}, "
        f"append-only, data in {redis.folder}"
    )


def _announce(opts: UpOptions, api_url: str, redis: RedisHandle, logs: Path) -> None:
    lines = [
        "curvelab is up",
        f"  API    {api_url}    docs: {api_url}/docs",
    ]
    if not opts.no_ui:
        lines.append(f"  UI     {parts.http_url(opts.host, opts.ui_port)}")
    lines += [
        f"  Redis  {masked(redis.url)}" + ("  (started here)" if redis.own else ""),
        f"  data   {opts.data_dir}",
        f"  logs   {logs}/{{api,{','.join(parts.worker_names(opts.workers))},predictor"
        f"{'' if opts.no_ui else ',ui'}"
        f"{',redis' if redis.own else ''}}}.log",
        "Press Ctrl-C to stop everything.",
    ]
    print("\n".join(lines), flush=True)
