"""The whole stack as a user starts it: ``curvelab up`` in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, stop_process, wait_for


@dataclass
class Stack:
    api_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)


def _healthy_with_worker(api_url: str) -> bool:
    try:
        body = httpx.get(f"{api_url}/api/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return body.get("status") == "ok" and body.get("workers", 0) >= 1


def start_stack(tmp_path: Path, redis_url: str, *extra: str) -> Stack:
    port = free_port()
    data_dir = tmp_path / "stack-data"
    log = tmp_path / "curvelab-up.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURVELAB_")}
    command = [
        sys.executable,
        "-m",
        "backend.cli.main",
        "up",
        "--no-ui",
        "--data-dir",
        str(data_dir),
        "--api-port",
        str(port),
        "--redis-url",
        redis_url,
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    api_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: _healthy_with_worker(api_url) or process.poll() is not None,
            timeout=120,
            interval=0.5,
            what="curvelab up to be healthy with a worker",
        )
    except AssertionError:
        stop_stack(process)
        raise AssertionError(log.read_text()[-4000:]) from None
    if process.poll() is not None:
        raise AssertionError(f"curvelab up exited:\n{log.read_text()[-4000:]}")
    return Stack(api_url=api_url, data_dir=data_dir, process=process, log=log)


def stop_stack(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, signal.SIGINT)  # Ctrl-C, as a user stops it


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    running = start_stack(tmp_path, redis_url)
    yield running
    stop_stack(running.process)
