"""The question's situation, measured: why is val_loss far above loss at first?

Generates a character dataset like the question's (30 classes, 50×55 RGB,
about 6400 training images after a 0.2 validation split), trains the
``seed-cnn-small`` preset (the question's network with filters 8–64, Dense
64, Adam 1e-3, BatchNorm momentum 0.99, batch 128, 6 epochs) through
``run_training`` with the gap probes on, prints each epoch's probes and the
diagnosis, then trains the diagnosis's own suggestion and compares the mean
of ``val_loss − loss`` over epochs 2–5.

    .venv/bin/python benchmarks/gap_experiment.py [--data-dir DIR]

A CPU run of a few minutes. No Redis needed: events are simply not published.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from statistics import mean
from typing import Any

from backend import runs
from backend.datasets.ingest import store_dataset
from backend.db import Database, Dataset, Run
from backend.diagnosis.report import RunDiagnosis, diagnose_run
from backend.settings import Settings
from backend.synthetic import write_character_zip
from backend.train_config import PRESETS, TrainConfig
from worker.training.runner import run_training

COLUMNS = (
    ("loss", "loss"),
    ("val_loss", "val_loss"),
    ("train_eval_loss", "train_eval"),
    ("train_eval_loss_recalibrated", "train_recal"),
    ("val_loss_recalibrated", "val_recal"),
    ("accuracy", "acc"),
    ("val_accuracy", "val_acc"),
    ("train_eval_accuracy", "train_eval_acc"),
    ("val_accuracy_recalibrated", "val_recal_acc"),
    ("bn_init_weight", "bn_init_w"),
    ("seconds", "epoch_s"),
    ("probe_seconds", "probe_s"),
)
GAP_EPOCHS = range(2, 6)


def make_dataset(settings: Settings, db: Database, per_class: int) -> str:
    archive = write_character_zip(
        settings.tmp_dir / "characters.zip",
        num_classes=30,
        per_class=per_class,
        image_size=(50, 55),
        mode="RGB",
        seed=0,
    )
    try:
        with db.session() as session:
            return store_dataset(session, archive, "characters", settings).id
    finally:
        archive.unlink()


def train(
    settings: Settings, db: Database, dataset_id: str, config: TrainConfig, name: str
) -> tuple[list[dict[str, Any]], RunDiagnosis]:
    with db.session() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        run_id = runs.create_run(session, dataset, config, name).id
    status = run_training(run_id, settings, db, None)
    if status != "succeeded":
        raise SystemExit(f"run {name} ended {status}")
    with db.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return runs.epoch_rows(session, run_id), diagnose_run(session, run, settings.datasets_dir)


def show(name: str, rows: list[dict[str, Any]], report: RunDiagnosis) -> None:
    print(f"\n== {name}")
    print("epoch " + " ".join(f"{label:>14}" for _, label in COLUMNS) + "  probe share")
    for row in rows:
        cells = " ".join(
            f"{row[key]:>14.4f}" if row.get(key) is not None else f"{'-':>14}" for key, _ in COLUMNS
        )
        share = row.get("probe_seconds", 0.0) / row["seconds"]
        print(f"{row['epoch']:>5} {cells}  {share:>10.1%}")
    print("gap decomposition (gap = train_mode + bn_lag + generalisation):")
    for part in report.decomposition:
        gap, train_mode, bn_lag, rest = (
            "-" if value is None else f"{value:.3f}"
            for value in (part.gap, part.train_mode, part.bn_lag, part.generalisation)
        )
        print(f"  epoch {part.epoch}: gap {gap} = {train_mode} + {bn_lag} + {rest}")
    print("findings:")
    for finding in report.findings:
        print(f"  [{finding.severity}] {finding.code}: {finding.evidence}")
        if finding.suggestion:
            print(f"      suggestion: {finding.suggestion}")


def mean_gap(rows: list[dict[str, Any]]) -> float:
    return mean(row["val_loss"] - row["loss"] for row in rows if row["epoch"] in GAP_EPOCHS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="default: a temporary folder")
    parser.add_argument("--per-class", type=int, default=267, help="images per class")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="curvelab-gap-") as scratch:
        settings = Settings(data_dir=args.data_dir or Path(scratch), redis_url="redis://unused")
        settings.ensure_dirs()
        db = Database(settings.sqlalchemy_url)
        dataset_id = make_dataset(settings, db, args.per_class)
        config = PRESETS["seed-cnn-small"][1]
        rows, report = train(settings, db, dataset_id, config, "seed-cnn-small")
        show("seed-cnn-small (BN momentum 0.99)", rows, report)
        lag = next((f for f in report.findings if f.code == "batchnorm_lag"), None)
        if lag is None or not lag.suggestion:
            raise SystemExit("no batchnorm_lag suggestion to try")
        fixed_config = TrainConfig.model_validate({**config.model_dump(), **lag.suggestion})
        fixed_rows, fixed_report = train(settings, db, dataset_id, fixed_config, "suggested")
        show(f"with the suggestion {lag.suggestion}", fixed_rows, fixed_report)
        before, after = mean_gap(rows), mean_gap(fixed_rows)
        print(f"\nmean val_loss − loss over epochs 2–5: {before:.3f} → {after:.3f}", end="")
        print(f" ({before / after:.1f}× smaller)" if after > 0 else " (validation below training)")
        db.dispose()


if __name__ == "__main__":
    main()
