"""Load on the live view: many SSE viewers of one run, plus steady REST polling.

Starts a curvelab stack of its own (``curvelab up --no-ui`` on free loopback
ports, with its own Redis and a temporary data dir), or uses one already
running with ``--api-url`` (loopback addresses only: this script never loads
another machine). It uploads a small generated dataset, starts a run with
many short epochs, and then, in one asyncio process:

- holds ``--viewers`` Server-Sent Events streams of that run open, each parsing
  every event, as a browser's EventSource would;
- polls ``GET /api/runs/{id}`` and ``/metrics`` at ``--rps`` requests a second
  (open loop: a slow answer does not slow the rate; with 50 still unanswered,
  a tick is skipped and counted as ``skipped_behind``).

After ``--seconds`` it cancels the run and waits for every stream to end with
the final status. Reported: errors (any non-200, dropped stream, error event
or missing final status; must be 0), whether every viewer got every epoch in
order, the epoch events' delivery latency and the REST latency.

Delivery latency is the time an epoch event reaches a viewer minus its stream
id's millisecond part, which is Redis's clock at the XADD, that is when the
worker published the epoch (after its SQL commit). Both clocks are this
machine's. Only events published after the viewer connected count (the
replayed ones are history, not delivery).

    python -m benchmarks.sse_load --seconds 60 --viewers 200 --rps 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from benchmarks.report import percentile

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
FINAL = {"succeeded", "failed", "cancelled"}
MAX_POLLS_IN_FLIGHT = 50
LIMITS = {
    "viewers": 1000,
    "seconds": 600,
    "rps": 200,
    "epochs": 1000,
    "per_class": 5000,
    "batch_every": 100_000,
}
CONFIG = {  # a run of many short epochs: tiny images, one small block
    "image_size": [16, 16],
    "color_mode": "grayscale",
    "filters": [4],
    "convs_per_block": 1,
    "dense_units": 8,
    "batch_size": 16,
    "gap_probes": False,
}


@dataclass
class Viewer:
    connected_at: float | None = None
    epochs: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    events: int = 0
    final: str | None = None
    error: str | None = None


@dataclass
class Polls:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0  # ticks with MAX_POLLS_IN_FLIGHT requests still unanswered


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    token = os.environ.get("CURVELAB_API_TOKEN") or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with stack(args.api_url) as (api_url, up_pid):
        report = asyncio.run(load(api_url, headers, args, up_pid))
    print(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 and report["all_viewers_got_every_epoch"] else 1


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-url", help="a running stack on this machine (default: start one)")
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rps", type=float, default=20.0, help="REST requests a second")
    parser.add_argument("--epochs", type=int, default=1000, help="the run's epochs (cancelled)")
    parser.add_argument(
        "--per-class", type=int, default=1000, help="images per class (2 classes): epoch length"
    )
    parser.add_argument(
        "--batch-every", type=int, default=100, help="a batch event every this many steps"
    )
    args = parser.parse_args(argv)
    for name, most in LIMITS.items():
        if not 0 < getattr(args, name) <= most:
            parser.error(f"--{name.replace('_', '-')} must be above 0 and at most {most}")
    if args.api_url and urlsplit(args.api_url).hostname not in LOOPBACK:
        parser.error(f"--api-url must be on this machine ({', '.join(sorted(LOOPBACK))})")
    return args


# -- the stack ----------------------------------------------------------------


@contextlib.contextmanager
def stack(api_url: str | None) -> Iterator[tuple[str, int | None]]:
    """The given API, or a fresh ``curvelab up --no-ui`` (and its pid) stopped afterwards."""
    if api_url:
        yield api_url.rstrip("/"), None
        return
    with tempfile.TemporaryDirectory(prefix="curvelab-sse-load-") as folder:
        api_port, redis_port = free_port(), free_port()
        argv = [sys.executable, "-m", "backend.cli.main", "up", "--no-ui", "--host", "127.0.0.1"]
        argv += ["--api-port", str(api_port), "--data-dir", folder]
        argv += ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"]
        log = Path(folder) / "up.log"
        # One TensorFlow thread: the worker trains flat out, and on a small
        # machine its thread pool would otherwise take the API's CPU, which
        # is what this measures.
        env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
        with log.open("wb") as out:
            # Its own session: Ctrl-C here reaches it only through the finally.
            up = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        url = f"http://127.0.0.1:{api_port}"
        try:
            wait_for_worker(url, up, log)
            yield url, up.pid
        finally:
            up.send_signal(signal.SIGINT)  # `up` stops its worker, API and Redis
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_worker(url: str, up: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise SystemExit(f"curvelab up exited ({up.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if httpx.get(f"{url}/api/health", timeout=2).json().get("workers", 0) >= 1:
                return
        time.sleep(0.5)
    raise SystemExit(f"no worker within {timeout:g}s:\n{log.read_text()[-3000:]}")


def start_run(client: httpx.Client, config: dict[str, Any], per_class: int) -> str:
    from backend.synthetic import write_character_zip

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "load.zip"
        archive = write_character_zip(path, num_classes=2, per_class=per_class, image_size=(16, 16))
        with archive.open("rb") as fh:
            reply = client.post("/api/datasets", files={"file": (archive.name, fh)})
    reply.raise_for_status()
    body = {"dataset_id": reply.json()["id"], "config": config}
    run = client.post("/api/runs", json=body, timeout=30)
    run.raise_for_status()
    return str(run.json()["id"])


def cpu_seconds(up_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of ``curvelab up``'s children, by part (Linux /proc)."""
    if up_pid is None:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    parts = {"uvicorn": "api", "celery": "worker", "redis-server": "redis"}
    found: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != up_pid:  # the parent's pid
                continue
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            part = next((name for key, name in parts.items() if key in command), None)
            if part:
                found[part] = found.get(part, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return found


# -- the load -----------------------------------------------------------------


async def load(
    api_url: str, headers: dict[str, str], args: argparse.Namespace, up_pid: int | None
) -> dict[str, Any]:
    with httpx.Client(base_url=api_url, headers=headers, timeout=120) as client:
        config = CONFIG | {"epochs": args.epochs, "batch_metrics_every": args.batch_every}
        run_id = start_run(client, config, args.per_class)
    viewers = [Viewer() for _ in range(args.viewers)]
    polls = Polls()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=args.viewers + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(60.0, connect=15.0, pool=60.0)
    # Three clients, so that neither the streams nor a backlog of polls can
    # starve the cancel and the final reads of connections.
    async with (
        httpx.AsyncClient(base_url=api_url, headers=headers, limits=limits, timeout=timeout) as sse,
        httpx.AsyncClient(base_url=api_url, headers=headers, timeout=timeout) as rest,
        httpx.AsyncClient(base_url=api_url, headers=headers, timeout=120) as control,
    ):
        watching = [asyncio.create_task(watch(sse, run_id, v)) for v in viewers]
        polling = asyncio.create_task(poll(rest, run_id, args.rps, stop, polls))
        started, cpu_started = time.monotonic(), time.process_time()
        stack_cpu = cpu_seconds(up_pid)
        load_before = os.getloadavg()[0]
        done = asyncio.gather(*watching)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), args.seconds)
            held_s, client_cpu_s = time.monotonic() - started, time.process_time() - cpu_started
            stack_cpu = {
                part: cpu_seconds(up_pid).get(part, 0.0) - seconds
                for part, seconds in stack_cpu.items()
            }
            load_average = os.getloadavg()[0]
            (await control.post(f"/api/runs/{run_id}/cancel")).raise_for_status()
            with contextlib.suppress(TimeoutError):  # the stragglers catch up, or count as errors
                await asyncio.wait_for(asyncio.shield(done), max(60.0, args.seconds))
        finally:
            for task in watching:
                task.cancel()
            stop.set()
            await polling
        run = (await control.get(f"/api/runs/{run_id}")).json()
        metrics = (await control.get(f"/api/runs/{run_id}/metrics")).json()
    stored = [row["epoch"] for row in metrics["epochs"]]
    machine = {
        "cpus": os.cpu_count(),
        "load_average_1m": [round(load_before, 1), round(load_average, 1)],  # start, end
        # CPU seconds spent while the viewers were held: this script, and the
        # stack's API, worker and Redis when this script started them
        "cpu_s": {"load_client": round(client_cpu_s, 1)}
        | {part: round(seconds, 1) for part, seconds in stack_cpu.items()},
    }
    return summary(viewers, polls, run, stored, held_s, args) | {"machine": machine}


async def watch(client: httpx.AsyncClient, run_id: str, viewer: Viewer) -> None:
    """One EventSource: parse events until the run's final status."""
    try:
        async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            if response.status_code != 200:
                viewer.error = f"HTTP {response.status_code}"
                return
            viewer.connected_at = time.time()
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    if name:  # a line starting with ':' is a comment (keep-alive)
                        fields[name] = value.removeprefix(" ")
                    continue
                if fields:
                    receive(viewer, fields, time.time())
                    fields = {}
                if viewer.final or viewer.error:
                    return
            viewer.error = viewer.error or "the stream ended before the run's final status"
    except httpx.HTTPError as exc:
        viewer.error = f"{type(exc).__name__}: {exc}"
    except asyncio.CancelledError:
        viewer.error = viewer.error or "no final status within the wait"


def receive(viewer: Viewer, fields: dict[str, str], now: float) -> None:
    viewer.events += 1
    data = json.loads(fields.get("data", "{}"))
    kind = fields.get("event", data.get("type"))
    if kind == "epoch":
        viewer.epochs.append(int(data["epoch"]))
        published_ms = int(fields.get("id", "0-0").split("-")[0])  # 0 for epochs sent from SQL
        if published_ms and viewer.connected_at and published_ms / 1000 >= viewer.connected_at:
            viewer.latencies_ms.append(now * 1000 - published_ms)
    elif kind == "status" and data.get("status") in FINAL:
        viewer.final = data["status"]
    elif kind == "error":
        viewer.error = f"error event: {data}"


async def poll(
    client: httpx.AsyncClient, run_id: str, rps: float, stop: asyncio.Event, polls: Polls
) -> None:
    paths = [f"/api/runs/{run_id}", f"/api/runs/{run_id}/metrics"]
    in_flight: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    at, sent = loop.time(), 0
    while not stop.is_set():
        if len(in_flight) < MAX_POLLS_IN_FLIGHT:
            task = asyncio.create_task(one_poll(client, paths[sent % 2], polls))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        else:  # the API is this far behind: the tick is lost, and reported
            polls.skipped += 1
        sent += 1
        at += 1 / rps
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, at - loop.time()))
    await asyncio.gather(*in_flight, return_exceptions=True)


async def one_poll(client: httpx.AsyncClient, path: str, polls: Polls) -> None:
    began = time.perf_counter()
    try:
        reply = await client.get(path)
    except httpx.HTTPError as exc:
        polls.errors.append(f"{path}: {type(exc).__name__}")
        return
    polls.latencies_ms.append((time.perf_counter() - began) * 1000)
    if reply.status_code != 200:
        polls.errors.append(f"{path}: HTTP {reply.status_code}")


# -- the report ---------------------------------------------------------------


def figure(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 1) if values else None


def summary(
    viewers: list[Viewer],
    polls: Polls,
    run: dict[str, Any],
    stored: list[int],
    held_s: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    expected = list(range(1, len(stored) + 1))
    incomplete = [i for i, v in enumerate(viewers) if v.epochs != expected or stored != expected]
    viewer_errors = [v.error for v in viewers if v.error]
    latencies = [ms for v in viewers for ms in v.latencies_ms]
    return {
        "viewers": len(viewers),
        "held_s": round(held_s, 1),
        "run_status": run["status"],
        "epochs": len(stored),
        "errors": len(viewer_errors) + len(polls.errors),
        "error_examples": (viewer_errors + polls.errors)[:5],
        "all_viewers_got_every_epoch": not incomplete and bool(stored),
        "viewers_missing_epochs": len(incomplete),
        "events_received": sum(v.events for v in viewers),
        "epoch_deliveries_timed": len(latencies),
        "delivery_ms": {
            "p50": figure(latencies, 50),
            "p95": figure(latencies, 95),
            "max": round(max(latencies), 1) if latencies else None,
        },
        "rest": {
            "requests": len(polls.latencies_ms) + len(polls.errors),
            "target_rps": args.rps,
            "skipped_behind": polls.skipped,
            "p50_ms": figure(polls.latencies_ms, 50),
            "p95_ms": figure(polls.latencies_ms, 95),
            "max_ms": round(max(polls.latencies_ms), 1) if polls.latencies_ms else None,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
