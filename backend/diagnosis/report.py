"""A run's diagnosis from what SQL holds: live while it trains, final after."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from backend import runs
from backend.db import Dataset, Run
from backend.diagnosis.facts import dataset_facts
from backend.diagnosis.findings import Finding
from backend.diagnosis.gap import GapRow, decompose
from backend.diagnosis.rules import diagnose
from backend.diagnosis.run_facts import RunFacts, read_summary
from backend.train_config import read_stored_config


@dataclass(frozen=True)
class RunDiagnosis:
    run_id: str
    status: str
    epochs: int
    findings: list[Finding]
    decomposition: list[GapRow]


def run_facts(session: Session, run: Run, datasets_dir: Path) -> RunFacts:
    """The facts of a worker's run (its TrainConfig and stored dataset) or of an
    external one (the FitSummary its client sent; its config is empty)."""
    class_names = [str(name) for name in run.class_names or []]
    if run.source == runs.EXTERNAL:
        return RunFacts.from_summary(read_summary(run.summary), class_names)
    config = read_stored_config(run.config).config
    dataset = session.get(Dataset, run.dataset_id) if run.dataset_id else None
    return RunFacts.from_config(config, dataset_facts(class_names, dataset, config, datasets_dir))


def diagnose_run(session: Session, run: Run, datasets_dir: Path) -> RunDiagnosis:
    """Findings (most severe first) and the per-epoch gap decomposition."""
    history = runs.epoch_rows(session, run.id)
    facts = run_facts(session, run, datasets_dir)
    return RunDiagnosis(
        run_id=run.id,
        status=run.status,
        epochs=len(history),
        findings=diagnose(history, facts),
        decomposition=decompose(history, facts.batch_norm),
    )
