"""Live latency: an epoch's end in the worker → its event at an SSE client.

Two runs (seed-cnn-small on a small dataset so that epochs are short and
many; gap probes off, then on) train through ``run_training`` in a worker
process, with a real SQLite database and Redis; the API runs under uvicorn;
an SSE client follows ``GET /api/runs/{id}/events`` and notes when each
epoch event arrives. The baseline client reads the same Redis stream
directly (``XREAD BLOCK``), as a hand-made live view would.

The worker notes two moments of each epoch (one clock: the same machine):
when Keras ends the epoch, and when the epoch's record is complete (the gap
probes have measured, the model is snapshotted); from then on the record is
being delivered: SQL row, Redis, SSE (the checkpoint file is written after
the event). With probes off the two moments are a snapshot apart, and the
goal is on the whole delay; with probes on it is on the delivery, and the
delay from Keras's epoch end, probes' own time included, is shown beside it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from backend import events
from backend.train_config import PRESETS
from benchmarks.fixtures import Workspace, api_server, queued_run, stored_dataset
from benchmarks.report import Row, at_most, percentile

PER_CLASS = 20  # 30 × 20 images: 480 to train, epochs of a few tenths of a second


def measure(space: Workspace, epochs: int) -> list[Row]:
    dataset_id = stored_dataset(space, PER_CLASS, name="latency")
    plain = _run(space, dataset_id, epochs, gap_probes=False)
    probed = _run(space, dataset_id, epochs, gap_probes=True)
    return [
        Row(
            "live latency p50, Keras's epoch end → SSE client, probes off (ms)",
            percentile(plain.baseline_from_end, 50),
            percentile(plain.from_end, 50),
            goal="info (baseline: XREAD on Redis)",
        ),
        Row(
            "live latency p95, Keras's epoch end → SSE client, probes off (ms)",
            percentile(plain.baseline_from_end, 95),
            percentile(plain.from_end, 95),
            goal="≤ 100 ms",
            check=at_most(100),
            checks="curvelab",
        ),
        Row(
            "live latency p95, epoch recorded → SSE client, probes on (ms)",
            percentile(probed.baseline_from_record, 95),
            percentile(probed.from_record, 95),
            goal="≤ 100 ms",
            check=at_most(100),
            checks="curvelab",
        ),
        Row(
            "  p95 from Keras's epoch end, gap probes' time included (ms)",
            percentile(probed.baseline_from_end, 95),
            percentile(probed.from_end, 95),
            goal="info",
        ),
    ]


@dataclass(frozen=True)
class _Delays:
    """Per epoch, in ms: to the SSE client and (baseline) to a Redis reader,
    from Keras's epoch end and from the epoch's complete record."""

    from_end: list[float]
    from_record: list[float]
    baseline_from_end: list[float]
    baseline_from_record: list[float]


def _run(space: Workspace, dataset_id: str, epochs: int, gap_probes: bool) -> _Delays:
    config = PRESETS["seed-cnn-small"][1].model_copy(
        update={"epochs": epochs, "gap_probes": gap_probes}
    )
    run_id = queued_run(space, dataset_id, config, f"latency probes={gap_probes}")
    moments = space.root / f"latency-{run_id}.jsonl"
    with api_server(space) as server:
        sse: dict[int, float] = {}
        direct: dict[int, float] = {}
        readers = [
            threading.Thread(target=_follow_sse, args=(server.url, run_id, sse), daemon=True),
            threading.Thread(
                target=_follow_redis,
                args=(space.settings.redis_url, run_id, epochs, direct),
                daemon=True,
            ),
        ]
        for reader in readers:
            reader.start()
        worker = mp.get_context("spawn").Process(
            target=_worker, args=(run_id, space.env, str(moments)), name="bench-latency-worker"
        )
        worker.start()
        worker.join()
        for reader in readers:
            reader.join(30)
    ended, recorded = {}, {}
    for line in moments.read_text().splitlines():
        moment = json.loads(line)
        ended[moment["epoch"]], recorded[moment["epoch"]] = moment["ended"], moment["recorded"]
    if len(sse) < epochs or len(direct) < epochs:
        raise RuntimeError(f"{len(sse)} SSE and {len(direct)} Redis epoch events of {epochs}")
    return _Delays(
        from_end=[1000 * (sse[e] - ended[e]) for e in ended],
        from_record=[1000 * (sse[e] - recorded[e]) for e in recorded],
        baseline_from_end=[1000 * (direct[e] - ended[e]) for e in ended],
        baseline_from_record=[1000 * (direct[e] - recorded[e]) for e in recorded],
    )


def _follow_sse(url: str, run_id: str, arrived: dict[int, float]) -> None:
    kind = ""
    with httpx.stream("GET", f"{url}/api/runs/{run_id}/events", timeout=120) as reply:
        for line in reply.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "epoch":
                arrived[json.loads(line.split(":", 1)[1])["epoch"]] = time.time()


def _follow_redis(redis_url: str, run_id: str, epochs: int, arrived: dict[int, float]) -> None:
    client = Redis.from_url(redis_url, socket_timeout=30)
    last = "0-0"
    deadline = time.monotonic() + 600
    while len(arrived) < epochs and time.monotonic() < deadline:
        reply: Any = client.xread({events.stream_key(run_id): last}, block=1000)
        now = time.time()
        for _, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                event = events.decode(fields)
                if event["type"] == "epoch":
                    arrived[event["epoch"]] = now
    client.close()


def _worker(run_id: str, env: dict[str, str], moments_path: str) -> None:
    import os

    os.environ.update(env)
    from backend.db import Database
    from backend.settings import Settings
    from worker.training import runner
    from worker.training.recorder import RunRecorder

    moments = Path(moments_path)

    class TimedRecorder(RunRecorder):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            ended = time.time()
            super().on_epoch_end(epoch, logs)
            record = {"epoch": epoch + 1, "ended": ended, "recorded": time.time()}
            with moments.open("a") as handle:
                handle.write(json.dumps(record) + "\n")

    runner.RunRecorder = TimedRecorder  # type: ignore[misc]
    settings = Settings()
    status = runner.run_training(
        run_id, settings, Database(settings.sqlalchemy_url), Redis.from_url(settings.redis_url)
    )
    if status != "succeeded":
        raise RuntimeError(f"run ended {status}")
