"""GET /api/runs/{id}/diagnosis over the real app and SQL: findings from the
stored epochs, live at any epoch count."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from backend import runs
from backend.db import Database, Dataset, Run
from backend.train_config import TrainConfig
from tests.backend.test_diagnosis_gap import LAGGING
from tests.conftest import BOTH_DATABASES

pytestmark = BOTH_DATABASES


def _run(database: Database, dataset_id: str, **config: object) -> str:
    with database.session() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        return runs.create_run(session, dataset, TrainConfig(**config), name="diag").id


def test_unknown_run_is_a_404(api: TestClient) -> None:
    reply = api.get("/api/runs/0123abcd/diagnosis")
    assert (reply.status_code, reply.json()) == (404, {"detail": "run not found"})


def test_a_run_without_epochs_has_no_findings(
    api: TestClient, database: Database, make_dataset_row
) -> None:
    run_id = _run(database, make_dataset_row())
    assert api.get(f"/api/runs/{run_id}/diagnosis").json() == {
        "run_id": run_id,
        "status": "queued",
        "epochs": 0,
        "findings": [],
        "decomposition": [],
    }


def test_a_training_run_is_diagnosed_from_its_recorded_epochs(
    api: TestClient, database: Database, make_dataset_row
) -> None:
    run_id = _run(database, make_dataset_row(), epochs=6, bn_momentum=0.99)
    with database.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.status = "running"
        session.commit()
        for row in LAGGING[:4]:  # four of six epochs so far
            values = {key: value for key, value in row.items() if key != "epoch"}
            runs.record_epoch(session, run_id, row["epoch"], values, [])
    body = api.get(f"/api/runs/{run_id}/diagnosis").json()
    assert (body["status"], body["epochs"]) == ("running", 4)
    severities = [finding["severity"] for finding in body["findings"]]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)
    lag = body["findings"][0]
    assert (lag["code"], lag["severity"]) == ("batchnorm_lag", "critical")
    assert lag["evidence"].startswith("at epoch 3, all of the gap")
    # 20 images of which 4 validate, batch 128: one step an epoch, so the
    # largest momentum that forgets within an epoch is the smallest offered.
    assert lag["suggestion"] == {"bn_momentum": 0.5}
    assert "not_converged" not in [finding["code"] for finding in body["findings"]]
    config = api.get(f"/api/runs/{run_id}").json()["config"]
    for finding in body["findings"]:
        TrainConfig.model_validate({**config, **finding["suggestion"]})
    fourth = body["decomposition"][3]
    assert fourth["epoch"] == 4
    parts = fourth["train_mode"] + fourth["bn_lag"] + fourth["generalisation"]
    assert parts == pytest.approx(fourth["gap"])
    assert round(fourth["bn_lag"], 6) == round(3.71 - 0.34, 6)
