"""Find a Redis at a URL, or start a ``redis-server`` of our own.

``curvelab up`` should work on a machine with nothing running: if no Redis
answers at the URL, one is started under ``DATA_DIR/redis`` with the
append-only file on, so that queued runs and event streams survive a restart
of ``curvelab up`` itself.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from backend.cli.supervisor import ChildSpec, spawn, stop_processes

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class RedisUnavailable(RuntimeError):
    """No Redis can be used or started; the message says what to do."""


@dataclass
class RedisHandle:
    url: str
    process: subprocess.Popen[bytes] | None = None  # None: someone else's Redis
    folder: Path | None = None

    @property
    def own(self) -> bool:
        return self.process is not None

    def stop(self, timeout: float = 10.0) -> None:
        # SIGTERM makes redis-server flush the append-only file before exiting.
        if self.process is not None:
            stop_processes([self.process], timeout)


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis at ``url`` replies to PING.

    A Redis that refuses our credentials is an error, not "absent": starting
    another one would hide a misconfiguration.
    """
    client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except AuthenticationError as exc:
        raise RedisUnavailable(f"the Redis at {url} refused the credentials: {exc}") from exc
    except ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise RedisUnavailable(f"the Redis at {url} needs a password: {exc}") from exc
        return False
    except (RedisConnectionError, RedisTimeoutError, OSError):
        return False
    finally:
        client.close()


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_or_start(url: str, data_dir: Path, *, log_dir: Path | None = None) -> RedisHandle:
    """Use the Redis at ``url`` if one answers, else start one under ``data_dir/redis``.

    The returned handle's ``url`` is the one to give every other process: it
    differs from ``url`` when the port was taken by something that is not Redis.
    """
    if answers(url):
        return RedisHandle(url)
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host not in LOOPBACK:
        raise RedisUnavailable(
            f"no Redis answers at {url}, and curvelab starts one only on this machine; "
            "start that Redis, or leave out --redis-url to use a local one"
        )
    if parts.scheme != "redis":
        raise RedisUnavailable(
            f"no Redis answers at {url}; a local one is started only for redis://"
        )
    port = parts.port or 6379
    if port_in_use(host, port):
        port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(
            f"no Redis answers at {url} and redis-server is not installed; install it "
            "(apt-get install redis-server) or pass --redis-url of a running Redis"
        )
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    config = _write_config(folder, port, unquote(parts.password) if parts.password else None)
    log_path = (log_dir or folder) / "redis.log"
    proc = spawn(ChildSpec("redis", [binary, str(config)], env={}, log_path=log_path))
    netloc = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    own_url = urlunsplit(("redis", f"{netloc}127.0.0.1:{port}", parts.path or "/0", "", ""))
    try:
        _wait_until_up(own_url, proc, log_path)
    except BaseException:
        stop_processes([proc], 5.0)  # never leave a half-started server behind
        raise
    return RedisHandle(own_url, proc, folder)


def _write_config(folder: Path, port: int, password: str | None) -> Path:
    # A config file, not arguments: a password must not show in `ps`.
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        f"dir {json.dumps(str(folder))}",  # quoted: a data dir may hold spaces
        "appendonly yes",
        "appendfsync everysec",
        'save ""',  # the append-only file is the persistence: no RDB snapshots besides
        "daemonize no",
        # The log goes to stdout, which the supervisor appends to the log file.
        'logfile ""',
    ]
    if password:
        lines.append(f"requirepass {json.dumps(password)}")
    config = folder / "redis.conf"
    config.touch(mode=0o600)
    config.write_text("\n".join(lines) + "\n")
    return config


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-5:]
            raise RedisUnavailable(
                f"redis-server exited with code {proc.returncode}: " + " / ".join(tail)
            )
        if answers(url, timeout=0.5):
            return
        time.sleep(0.1)
    raise RedisUnavailable(f"redis-server did not answer at {url} within 15 s; see {log_path}")
