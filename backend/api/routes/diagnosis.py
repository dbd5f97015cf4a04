"""A run's diagnosis: what its curves show and which knob moves them."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import ResourcesDep, SessionDep
from backend.api.routes.runs import get_run
from backend.api.schemas import Diagnosis
from backend.diagnosis.report import diagnose_run

router = APIRouter(prefix="/runs", tags=["diagnosis"])


@router.get("/{run_id}/diagnosis", response_model=Diagnosis)
def run_diagnosis(run_id: str, session: SessionDep, resources: ResourcesDep) -> Diagnosis:
    """Findings, most severe first, and the per-epoch gap decomposition; live while training."""
    run = get_run(session, run_id)
    report = diagnose_run(session, run, resources.settings.datasets_dir)
    return Diagnosis.model_validate(report)
