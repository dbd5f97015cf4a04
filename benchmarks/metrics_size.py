"""API: the cost of ``GET /api/runs/{id}/metrics`` on a run of a million batch points.

A run that records a batch point every step (1000 steps an epoch, 1000
epochs) has a million rows in ``batch_metrics``. The baseline is the route as
it was before its points were downsampled: every row read, parsed and encoded
into one body (``_every_row``, kept here as it was). curvelab is the route's
``metrics_reply.encode`` now (at most 2000 points, min/max per bucket, read in
chunks), and the full series as the streamed ``batches.csv``.

Each figure comes from a fresh child process that builds the body once, so
that one measurement's memory cannot hide in another's: the time (wall), the
growth of the process's resident memory (``ru_maxrss`` over the RSS after its
imports and a warm-up read), and in a second child the peak of the Python heap
(``tracemalloc``, which slows the code it watches). A second run of 100k
points shows whether the memory follows the run's length.

``python -m benchmarks.metrics_size [--points N]`` prints the table alone.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic_core import from_json, to_json
from sqlalchemy import Text, cast, select, update
from sqlalchemy.orm import Session

from backend import runs
from backend.api import metrics_csv, metrics_reply
from backend.db import BatchMetrics, Database, Dataset, EpochMetrics, Run
from backend.train_config import TrainConfig
from benchmarks.fixtures import Workspace, workspace
from benchmarks.report import Row, at_most, format_table

POINTS = 1_000_000
SMALL_POINTS = 100_000
STEPS_PER_EPOCH = 1000
MODES = ("every_row", "downsampled", "csv")


def measure(space: Workspace, points: int = POINTS) -> list[Row]:
    url = space.settings.sqlalchemy_url
    large, small = _long_run(space.db, points), _long_run(space.db, SMALL_POINTS)
    got = {
        (mode, run_id, trace): _child(url, run_id, mode, trace)
        for mode in MODES
        for run_id in (large, small)
        for trace in (False, True)
        if run_id == large or mode != "every_row"
    }

    def of(mode: str, key: str, run_id: str = large, trace: bool = False) -> float:
        return float(got[mode, run_id, trace][key])

    label = f"{points / 1e6:g}M" if points >= 1e6 else f"{points // 1000}k"
    ratio_goal = "≤ 0.1× (a body of every row: ≥ 1×)"
    return [
        Row(
            f"GET metrics, {label} batch points: Python heap peak (MiB)",
            of("every_row", "heap_mib", trace=True),
            of("downsampled", "heap_mib", trace=True),
            goal=ratio_goal,
            check=at_most(0.1),
        ),
        Row(
            "  process memory growth, RSS (MiB)",
            of("every_row", "rss_mib"),
            of("downsampled", "rss_mib"),
            goal="info",
        ),
        Row(
            "  time to build the body (s)",
            of("every_row", "seconds"),
            of("downsampled", "seconds"),
            goal="info",
        ),
        Row(
            "  body size (MiB)",
            of("every_row", "body_mib"),
            of("downsampled", "body_mib"),
            goal="info (2000 points, every epoch)",
        ),
        Row(
            f"  heap peak, {SMALL_POINTS // 1000}k → {label} points (MiB)",
            of("downsampled", "heap_mib", small, True),
            of("downsampled", "heap_mib", trace=True),
            goal="≤ 1.5× (flat with the run's length)",
            check=at_most(1.5),
        ),
        Row(
            f"batches.csv, {label} points: heap peak vs a body of every row (MiB)",
            of("every_row", "heap_mib", trace=True),
            of("csv", "heap_mib", trace=True),
            goal=ratio_goal,
            check=at_most(0.1),
        ),
        Row(
            f"  heap peak, {SMALL_POINTS // 1000}k → {label} points (MiB)",
            of("csv", "heap_mib", small, True),
            of("csv", "heap_mib", trace=True),
            goal="≤ 1.5× (flat with the run's length)",
            check=at_most(1.5),
        ),
        Row(
            "  time to stream it all (s)",
            of("every_row", "seconds"),
            of("csv", "seconds"),
            goal="info (baseline: the body of every row)",
        ),
        Row("  CSV size (MiB)", None, of("csv", "body_mib"), goal="info"),
    ]


def _long_run(db: Database, points: int) -> str:
    """A run of ``points`` batch points and their epochs, as a worker that
    recorded every step leaves them (rows written through the driver)."""
    epochs = math.ceil(points / STEPS_PER_EPOCH)
    with db.session() as session:
        dataset = Dataset(
            name="rows only",
            num_images=6400,
            classes=[{"name": f"c{i}", "count": 200} for i in range(32)],
            image_shapes=[[50, 55]],
            warnings=[],
        )
        session.add(dataset)
        session.commit()
        run_id = runs.create_run(session, dataset, TrainConfig(epochs=epochs), "long").id
        session.add_all(
            EpochMetrics(run_id=run_id, epoch=epoch, values=_epoch_values(epoch))
            for epoch in range(1, epochs + 1)
        )
        driver: Any = session.connection().connection.driver_connection
        driver.executemany(
            'INSERT INTO batch_metrics (run_id, step, epoch, "values") VALUES (?, ?, ?, ?)',
            _points(run_id, points),
        )
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(epochs_done=epochs, metrics_version=Run.metrics_version + 1)
        )
        session.commit()
    return run_id


def _points(run_id: str, count: int) -> Iterator[tuple[str, int, float, str]]:
    for step in range(1, count + 1):
        decay = math.exp(-step / 200_000)
        loss = 0.2 + 3 * decay + 0.3 * math.sin(step * 0.7) ** 8
        values = {"loss": round(loss, 7), "accuracy": round(0.95 - 0.9 * decay, 7)}
        yield run_id, step, step / STEPS_PER_EPOCH, json.dumps(values)


def _epoch_values(epoch: int) -> dict[str, float]:
    decay = math.exp(-epoch / 200)
    return {
        "loss": 0.2 + 3 * decay,
        "accuracy": 0.95 - 0.9 * decay,
        "val_loss": 0.4 + 3.5 * decay,
        "val_accuracy": 0.9 - 0.85 * decay,
        "seconds": 4.6,
        "images_per_sec": 1500.0,
        "lr": 0.001,
        "train_eval_loss": 0.25 + 3.2 * decay,
        "val_loss_recalibrated": 0.38 + 3 * decay,
        "bn_init_weight": 0.0,
    }


def _every_row(session: Session, run_id: str) -> bytes:
    """The route's body before downsampling (``metrics_reply.encode`` of
    2026-11): every epoch and every batch point, read at once, one body."""
    epochs = session.execute(
        select(EpochMetrics.epoch, cast(EpochMetrics.values, Text))
        .where(EpochMetrics.run_id == run_id)
        .order_by(EpochMetrics.epoch)
    ).all()
    batches = session.execute(
        select(BatchMetrics.step, BatchMetrics.epoch, cast(BatchMetrics.values, Text))
        .where(BatchMetrics.run_id == run_id)
        .order_by(BatchMetrics.step)
    ).all()
    epoch_values = from_json("[" + ",".join(text for _, text in epochs) + "]")
    batch_values = from_json("[" + ",".join(text for _, _, text in batches) + "]")
    reply = {
        "epochs": [
            {"epoch": epoch, **values}
            for (epoch, _), values in zip(epochs, epoch_values, strict=True)
        ],
        "batches": [
            {"step": step, "epoch": at, **values}
            for (step, at, _), values in zip(batches, batch_values, strict=True)
        ],
    }
    return to_json(reply, inf_nan_mode="null")


def _child(url: str, run_id: str, mode: str, trace: bool) -> dict[str, float]:
    argv = [sys.executable, "-m", "benchmarks.metrics_size", "--child", mode, url, run_id]
    if trace:
        argv.append("--trace")
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=1800)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _build(db: Database, run_id: str, mode: str) -> int:
    """Build the mode's answer once; its size in bytes."""
    if mode == "csv":
        return sum(len(part.encode()) for part in metrics_csv.batch_csv(db, run_id))
    with db.session() as session:
        if mode == "every_row":
            return len(_every_row(session, run_id))
        return len(metrics_reply.encode(session, run_id))


def _run_child(url: str, run_id: str, mode: str, trace: bool) -> None:
    db = Database(url)
    with db.session() as session:  # connections, SQL compilation, imports: warm
        metrics_reply.batch_span(session, run_id)
        metrics_reply.epoch_rows(session, run_id)
    work: Callable[[], int] = lambda: _build(db, run_id, mode)  # noqa: E731
    result: dict[str, float] = {}
    if trace:
        tracemalloc.start()
        size = work()
        result["heap_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    else:
        before = _rss_kib()
        started = time.perf_counter()
        size = work()
        result["seconds"] = time.perf_counter() - started
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        result["rss_mib"] = max(grown, 0) / 1024
    result["body_mib"] = size / 2**20
    db.dispose()
    print(json.dumps(result))


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=POINTS)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "DATABASE_URL", "RUN_ID"))
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    if args.child:
        mode, url, run_id = args.child
        _run_child(url, run_id, mode, args.trace)
        return
    with workspace() as space:
        print(format_table(measure(space, args.points)))


if __name__ == "__main__":
    main()
