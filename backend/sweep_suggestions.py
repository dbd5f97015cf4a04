""" "Try every suggestion": one "list" sweep of a run's config and each patch
its diagnosis suggests, plus all of them together when there are two or more
(on a field two findings set, the more severe finding's value: findings come
most severe first)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from backend import runs
from backend.api.sweep_schemas import SweepCreate, Variant
from backend.db import Dataset, Run, Sweep
from backend.diagnosis.report import diagnose_run
from backend.settings import Settings
from backend.sweep_space import describe
from backend.sweeps import SweepError, create_sweep
from backend.train_config import read_stored_config

PARALLEL = 2
MAX_LABEL = 200


def suggestion_variants(findings: list[Any]) -> list[Variant]:
    """ "original", one variant per finding with a patch, and "all suggestions".
    Each label (the run's name) says the change and the finding it answers:
    "bn_momentum=0.9 · batchnorm_lag"."""
    suggested = [finding for finding in findings if finding.suggestion]
    variants = [Variant(label="original")]
    variants += [
        Variant(label=_label(finding.suggestion, finding.code), patch=dict(finding.suggestion))
        for finding in suggested
    ]
    if len(suggested) >= 2:
        merged: dict[str, Any] = {}
        for finding in reversed(suggested):  # the most severe is applied last: it wins
            merged.update(finding.suggestion)
        variants.append(Variant(label=_label(merged, "all suggestions"), patch=merged))
    return variants


def _label(patch: dict[str, Any], why: str) -> str:
    return f"{describe(patch, MAX_LABEL - len(why) - 3)} · {why}"


def suggestions_sweep(session: Session, settings: Settings, celery: Celery, run: Run) -> Sweep:
    if run.source == runs.EXTERNAL:
        raise SweepError(
            409,
            "an external run trains in its own script: apply the suggestions there "
            "(each finding's keras_code)",
        )
    dataset = session.get(Dataset, run.dataset_id) if run.dataset_id else None
    if dataset is None:
        raise SweepError(404, "the run's dataset was deleted; there is nothing to train on")
    report = diagnose_run(session, run, settings.datasets_dir)
    variants = suggestion_variants(report.findings)
    if len(variants) == 1:
        raise SweepError(409, "the run's diagnosis suggests no config change to try")
    body = SweepCreate(
        dataset_id=dataset.id,
        config=read_stored_config(run.config).config,
        method="list",
        variants=variants,
        parallel=PARALLEL,
        name=f"Suggestions for {run.name}"[:MAX_LABEL],
    )
    return create_sweep(session, settings, celery, dataset, body, source_run_id=run.id)
