"""API: ``GET /api/runs/{id}/metrics`` of a 200-epoch run under 20 clients.

The run's rows are written as the worker writes them (``runs.record_epoch``:
each epoch's values and five batch points). The real app runs under uvicorn,
on loopback; 20 concurrent httpx clients request the metrics for a few
seconds, three ways:

- polling one run, as a run page's viewers do: after the first request the
  body comes from the API's body cache, behind a read of the run's row (its
  ``metrics_version``);
- the same with ``If-None-Match``, as the UI's client polls: 304s, no body;
- a different run each request, cycling through more copies of the run than
  the body cache holds (the API runs with a 4 MiB cache,
  ``CURVELAB_METRICS_CACHE_MB``, about 20 such bodies): every body decoded
  and encoded anew.

The baseline is a bare FastAPI app under the same uvicorn returning the same
response bytes from memory (a 304 when ``If-None-Match`` names its ETag): the
cost of HTTP and the event loop alone. Rounds alternate between the two; the
figures are medians of rounds.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response
from sqlalchemy import insert, literal, select

from backend import runs
from backend.db import BatchMetrics, Dataset, EpochMetrics, Run
from backend.train_config import TrainConfig
from benchmarks.fixtures import Workspace, api_server
from benchmarks.report import Row, median, percentile

CLIENTS = 20
EPOCHS = 200
POINTS_PER_EPOCH = 5
PAYLOAD_ENV = "CURVELAB_BENCH_PAYLOAD"  # the baseline app's response body, a file
# Round-robin over more runs than the LRU body cache holds: every read misses.
UNCACHED_RUNS = 128
CACHE_ENV = {"CURVELAB_METRICS_CACHE_MB": "4"}


@dataclass(frozen=True)
class Load:
    label: str
    paths: list[str]  # cycled through, one request after another
    revalidate: bool = False  # send If-None-Match with the ETag of the first reply


def measure(space: Workspace, rounds: int, seconds: float) -> list[Row]:
    run_id = _recorded_run(space)
    path = f"/api/runs/{run_id}/metrics"
    copies = [f"/api/runs/{copy}/metrics" for copy in _copies(space, run_id, UNCACHED_RUNS)]
    with api_server(space, extra_env=CACHE_ENV) as real:
        body = httpx.get(real.url + path, timeout=30).content
        payload = space.root / "metrics.json"
        payload.write_bytes(body)
        size = f"{len(body) / 1024:.0f} KiB"
        loads = [
            Load(f"GET metrics, 200 epochs ({size}), {CLIENTS} clients (req/s)", [path]),
            Load("  one run, If-None-Match: 304 (req/s)", [path], revalidate=True),
            Load(f"  a different run each request, of {len(copies)} (req/s)", copies),
        ]
        with api_server(
            space,
            app="benchmarks.api_load:baseline_app",
            ready_path=path,
            extra_env={PAYLOAD_ENV: str(payload)},
        ) as bare:
            rates: dict[tuple[str, str], list[float]] = defaultdict(list)
            p99s: dict[tuple[str, str], list[float]] = defaultdict(list)
            for _ in range(rounds):
                for load in loads:
                    for name, url in (("bare", bare.url), ("curvelab", real.url)):
                        urls = [url + one for one in load.paths]
                        rate, latencies = asyncio.run(_load(urls, seconds, load.revalidate))
                        rates[load.label, name].append(rate)
                        p99s[load.label, name].append(percentile(latencies, 99))
    rows: list[Row] = []
    for index, load in enumerate(loads):
        goal = "info (baseline: same bytes, bare FastAPI)" if index == 0 else "info"
        rows.append(
            Row(
                load.label,
                median(rates[load.label, "bare"]),
                median(rates[load.label, "curvelab"]),
                goal=goal,
            )
        )
        rows.append(
            Row(
                "    p99 latency (ms)" if index else "  p99 latency (ms)",
                median(p99s[load.label, "bare"]),
                median(p99s[load.label, "curvelab"]),
                goal="info",
            )
        )
    return rows


async def _load(
    urls: list[str], seconds: float, revalidate: bool = False
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    turns = itertools.cycle(urls)
    expected = 304 if revalidate else 200
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        first = await client.get(urls[0])  # connections and caches warm
        first.raise_for_status()
        headers = {"If-None-Match": first.headers["etag"]} if revalidate else {}
        deadline = time.perf_counter() + seconds

        async def one_client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                reply = await client.get(next(turns), headers=headers)
                if reply.status_code != expected:
                    raise RuntimeError(f"{reply.url}: {reply.status_code}, not {expected}")
                latencies.append(1000 * (time.perf_counter() - started))

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


def _recorded_run(space: Workspace) -> str:
    """A finished 200-epoch run, recorded epoch by epoch as the worker does."""
    config = TrainConfig(epochs=EPOCHS)
    with space.db.session() as session:
        dataset = Dataset(
            name="rows only",
            num_images=6400,
            classes=[{"name": f"c{i}", "count": 200} for i in range(32)],
            image_shapes=[[50, 55]],
            warnings=[],
        )
        session.add(dataset)
        session.commit()
        run_id = runs.create_run(session, dataset, config, "200 epochs").id
    steps = 50
    for epoch in range(1, EPOCHS + 1):
        decay = math.exp(-epoch / 40)
        values = {
            "loss": 0.2 + 3 * decay,
            "accuracy": 0.95 - 0.9 * decay,
            "val_loss": 0.4 + 3.5 * decay,
            "val_accuracy": 0.9 - 0.85 * decay,
            "seconds": 4.6,
            "images_per_sec": 1500.0,
            "lr": 0.001,
            "train_eval_loss": 0.25 + 3.2 * decay,
            "train_eval_accuracy": 0.94 - 0.9 * decay,
            "train_eval_loss_recalibrated": 0.22 + 3 * decay,
            "train_eval_accuracy_recalibrated": 0.95 - 0.9 * decay,
            "val_loss_recalibrated": 0.38 + 3 * decay,
            "val_accuracy_recalibrated": 0.9 - 0.8 * decay,
            "bn_init_weight": 0.99 ** (steps * epoch),
            "probe_seconds": 0.3,
        }
        points = [
            (
                (epoch - 1) * steps + step,
                epoch - 1 + step / steps,
                {"loss": values["loss"] * 1.05, "accuracy": values["accuracy"] * 0.98},
            )
            for step in range(10, steps + 1, 10)
        ]
        with space.db.session() as session:
            runs.record_epoch(session, run_id, epoch, values, points)
    return run_id


def _copies(space: Workspace, run_id: str, count: int) -> list[str]:
    """``count`` new runs with the rows of ``run_id``, copied in SQL."""
    copies: list[str] = []
    with space.db.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise LookupError(f"no run {run_id}")
        for _ in range(count):
            copy = Run(
                name="copy",
                dataset_id=run.dataset_id,
                class_names=run.class_names,
                config=run.config,
                status=run.status,
                epochs_done=run.epochs_done,
            )
            session.add(copy)
            session.flush()
            session.execute(
                insert(EpochMetrics).from_select(
                    ["run_id", "epoch", "values"],
                    select(literal(copy.id), EpochMetrics.epoch, EpochMetrics.values).where(
                        EpochMetrics.run_id == run_id
                    ),
                )
            )
            session.execute(
                insert(BatchMetrics).from_select(
                    ["run_id", "step", "epoch", "values"],
                    select(
                        literal(copy.id), BatchMetrics.step, BatchMetrics.epoch, BatchMetrics.values
                    ).where(BatchMetrics.run_id == run_id),
                )
            )
            copies.append(copy.id)
        session.commit()
    return copies


def baseline_app() -> FastAPI:
    """Serves the file named by ``CURVELAB_BENCH_PAYLOAD`` at any path, as JSON,
    with an ETag; a 304 when ``If-None-Match`` names it."""
    body = Path(os.environ[PAYLOAD_ENV]).read_bytes()
    etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    app = FastAPI()

    @app.get("/{path:path}")
    def payload(path: str, request: Request) -> Response:
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    return app
