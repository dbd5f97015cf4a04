"""A database of many finished runs, written straight through SQLAlchemy.

What the runs list is measured on (benchmarks/runs_list.py): runs as the
worker leaves them — ten epoch rows each with the values a worker records,
the summary columns filled by ``run_summary.summarise`` from those same
rows, a few tags, two datasets, mixed final statuses, and one run in
``SWEEP_EVERY`` from a sweep of ``SWEEP_RUNS`` (two sweeps at 10,000 runs) —
inserted in bulk (executemany), since recording 100,000 epochs one
transaction at a time would take longer than the benchmark itself.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert

from backend import run_summary
from backend.db import Database, Dataset, EpochMetrics, Run, RunTag, Sweep, new_id, utcnow
from backend.train_config import TrainConfig

EPOCHS = 10
NAME_PREFIX = "bench-"  # every seeded run's name starts so: the browser waits for one
TAGS = ("baseline", "bn", "augment", "lr-search", "keep")
CHUNK = 2000  # rows per executemany: bounded memory at any count

SWEEP_EVERY = 25
SWEEP_RUNS = 200  # a sweep of hundreds of runs; more runs, more sweeps

# Final statuses only, weighted roughly as a busy project's list: no run stays
# queued or running (nothing would ever train it, and the page would poll).
# Only a sweep's pruner prunes.
STATUSES = (("succeeded", 0.85), ("failed", 0.08), ("cancelled", 0.07))
SWEEP_STATUSES = (("succeeded", 0.6), ("pruned", 0.35), ("failed", 0.05))


@dataclass(frozen=True)
class Seeded:
    """What was written, for the queries that read it back."""

    runs: int
    datasets: list[str]
    sweeps: list[str]


def seed(db: Database, count: int, seed_value: int = 0) -> Seeded:
    """``count`` finished runs over two datasets, one created a minute after
    the other (the newest last)."""
    rng = random.Random(seed_value)
    start = utcnow() - timedelta(minutes=count + 1)
    with db.session() as session:
        datasets = [
            Dataset(
                name=name,
                num_images=images,
                classes=[{"name": f"c{i}", "count": images // 30} for i in range(30)],
                image_shapes=[{"height": 55, "width": 50, "mode": "RGB", "count": images}],
                warnings=[],
                created_at=start,
            )
            for name, images in (("characters", 6000), ("characters small", 1500))
        ]
        session.add_all(datasets)
        session.flush()
        sweeps = [
            Sweep(
                name=f"sweep {i}",
                dataset_id=datasets[0].id,
                config=TrainConfig().model_dump(mode="json"),
                space={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
                method="tpe",
                max_runs=SWEEP_RUNS,
                parallel=2,
                metric="val_loss",
                direction="minimize",
                prune="median",
                status="finished",
                created_at=start,
                finished_at=start,
            )
            for i in range(max(1, math.ceil(count / SWEEP_EVERY / SWEEP_RUNS)))
        ]
        session.add_all(sweeps)
        session.commit()
        dataset_ids = [d.id for d in datasets]
        sweep_ids = [s.id for s in sweeps]
        class_names = [c["name"] for c in datasets[0].classes]
    for first in range(0, count, CHUNK):
        batch = [
            _run(rng, index, start, dataset_ids, sweep_ids, class_names)
            for index in range(first, min(count, first + CHUNK))
        ]
        with db.session() as session:
            session.execute(insert(Run), [row for row, _, _ in batch])
            session.execute(insert(EpochMetrics), [e for _, epochs, _ in batch for e in epochs])
            tags = [t for _, _, tags in batch for t in tags]
            if tags:
                session.execute(insert(RunTag), tags)
            session.commit()
    return Seeded(count, dataset_ids, sweep_ids)


def _run(
    rng: random.Random,
    index: int,
    start: datetime,
    dataset_ids: list[str],
    sweep_ids: list[str],
    class_names: list[str],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One run's row, its epoch rows and its tag rows."""
    run_id = new_id()
    member = index % SWEEP_EVERY == 0
    sweep = sweep_ids[index // SWEEP_EVERY // SWEEP_RUNS] if member else None
    weights = SWEEP_STATUSES if member else STATUSES
    status = rng.choices([s for s, _ in weights], [w for _, w in weights])[0]
    epochs = EPOCHS if status == "succeeded" else rng.randint(1, EPOCHS - 1)
    config = TrainConfig(
        optimizer=rng.choice(["adam", "adam", "sgd", "rmsprop"]),
        learning_rate=rng.choice([1e-4, 3e-4, 1e-3, 3e-3]),
        batch_size=rng.choice([32, 64, 128]),
        bn_momentum=rng.choice([0.9, 0.99]),
        epochs=EPOCHS,
    )
    rate = rng.uniform(0.1, 0.4)  # how fast this run learns
    floor = rng.uniform(0.3, 1.2)
    values = [_epoch(rng, epoch, rate, floor) for epoch in range(1, epochs + 1)]
    created = start + timedelta(minutes=index)
    finished = created + timedelta(seconds=sum(v["seconds"] for v in values) + 5)
    row: dict[str, Any] = {
        "id": run_id,
        "name": (
            f"{NAME_PREFIX}{index:05d} {config.optimizer} lr={config.learning_rate:g} "
            f"bs={config.batch_size}"
        ),
        "dataset_id": dataset_ids[0] if index % 3 else dataset_ids[1],
        "class_names": class_names,
        "config": config.model_dump(mode="json"),
        "status": status,
        "epochs_done": epochs,
        "error": {
            "failed": "ResourceExhaustedError: OOM when allocating tensor",
            "pruned": f"pruned at epoch {epochs}: val_loss above the median of earlier trials",
        }.get(status),
        "created_at": created,
        "queued_at": created,
        "started_at": created + timedelta(seconds=2),
        "finished_at": finished,
        "attempt": 1,
        "notes": "tried after the diagnosis suggested it" if index % 17 == 0 else None,
        "sweep_id": sweep,
        "trial_number": index // SWEEP_EVERY % SWEEP_RUNS if member else None,
        **run_summary.summarise(enumerate(values, start=1)),
    }
    epoch_rows = [
        {"run_id": run_id, "epoch": epoch, "values": v} for epoch, v in enumerate(values, start=1)
    ]
    tags = rng.sample(TAGS, rng.choice([0, 0, 1, 1, 2]))
    tag_rows = [{"run_id": run_id, "tag": tag} for tag in tags]
    return row, epoch_rows, tag_rows


def _epoch(rng: random.Random, epoch: int, rate: float, floor: float) -> dict[str, float]:
    """What a worker records for an epoch (backend.events), with a little noise."""
    decay = math.exp(-rate * epoch)
    noise = rng.uniform(-0.03, 0.03)
    return {
        "loss": 0.1 + 3.0 * decay + noise,
        "accuracy": min(1.0, 0.98 - 0.9 * decay + noise),
        "val_loss": floor + 2.8 * decay + 2 * noise,
        "val_accuracy": min(1.0, 0.92 - 0.85 * decay - floor / 10 + noise),
        "seconds": rng.uniform(3.5, 6.0),
        "images_per_sec": rng.uniform(1100.0, 1600.0),
        "lr": 0.001,
        "train_eval_loss": 0.15 + 2.9 * decay,
        "train_eval_accuracy": min(1.0, 0.97 - 0.9 * decay),
        "val_loss_recalibrated": floor * 0.95 + 2.7 * decay,
        "val_accuracy_recalibrated": min(1.0, 0.93 - 0.85 * decay - floor / 10),
        "bn_init_weight": 0.99 ** (50 * epoch),
        "probe_seconds": rng.uniform(0.1, 0.3),
    }
