"""API: ``GET /api/runs/{id}/metrics`` of a 200-epoch run under 20 clients.

The run's rows are written as the worker writes them (``runs.record_epoch``:
each epoch's values and five batch points). The real app runs under uvicorn,
on loopback; 20 concurrent httpx clients request the metrics for a few
seconds. The baseline is a bare FastAPI app under the same uvicorn returning
the same response bytes from memory: the cost of HTTP and the event loop
alone. Rounds alternate between the two; the figures are medians of rounds.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path

import httpx
from fastapi import FastAPI, Response

from backend import runs
from backend.db import Dataset
from backend.train_config import TrainConfig
from benchmarks.fixtures import Workspace, api_server
from benchmarks.report import Row, median, percentile

CLIENTS = 20
EPOCHS = 200
POINTS_PER_EPOCH = 5
PAYLOAD_ENV = "CURVELAB_BENCH_PAYLOAD"  # the baseline app's response body, a file


def measure(space: Workspace, rounds: int, seconds: float) -> list[Row]:
    run_id = _recorded_run(space)
    path = f"/api/runs/{run_id}/metrics"
    with api_server(space) as real:
        body = httpx.get(real.url + path, timeout=30).content
        payload = space.root / "metrics.json"
        payload.write_bytes(body)
        with api_server(
            space,
            app="benchmarks.api_load:baseline_app",
            ready_path=path,
            extra_env={PAYLOAD_ENV: str(payload)},
        ) as bare:
            rates: dict[str, list[float]] = {"bare": [], "curvelab": []}
            p99s: dict[str, list[float]] = {"bare": [], "curvelab": []}
            for _ in range(rounds):
                for name, url in (("bare", bare.url), ("curvelab", real.url)):
                    rate, latencies = asyncio.run(_load(url + path, seconds))
                    rates[name].append(rate)
                    p99s[name].append(percentile(latencies, 99))
    size = f"{len(body) / 1024:.0f} KiB"
    return [
        Row(
            f"GET metrics, 200 epochs ({size}), {CLIENTS} clients (req/s)",
            median(rates["bare"]),
            median(rates["curvelab"]),
            goal="info (baseline: same bytes, bare FastAPI)",
        ),
        Row(
            "  p99 latency (ms)",
            median(p99s["bare"]),
            median(p99s["curvelab"]),
            goal="info",
        ),
    ]


async def _load(url: str, seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await client.get(url)  # connections and caches warm
        deadline = time.perf_counter() + seconds

        async def one_client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                reply = await client.get(url)
                reply.raise_for_status()
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


def baseline_app() -> FastAPI:
    """Serves the file named by ``CURVELAB_BENCH_PAYLOAD`` at any path, as JSON."""
    body = Path(os.environ[PAYLOAD_ENV]).read_bytes()
    app = FastAPI()

    @app.get("/{path:path}")
    def payload(path: str) -> Response:
        return Response(body, media_type="application/json")

    return app
