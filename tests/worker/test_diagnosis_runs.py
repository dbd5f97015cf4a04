"""The diagnosis of real tiny training runs: each rule on a run built to
show it, its evidence checked against the stored probes."""

from __future__ import annotations

import re
from statistics import mean

from backend import runs
from backend.db import Database, Run
from backend.diagnosis.findings import Finding
from backend.diagnosis.report import RunDiagnosis, diagnose_run
from backend.settings import Settings
from tests.worker.conftest import MakeDataset, MakeRun
from worker.training.runner import run_training


def _train_and_diagnose(
    settings: Settings, database: Database, run_id: str
) -> tuple[RunDiagnosis, list[dict]]:
    assert run_training(run_id, settings, database, None) == "succeeded"
    with database.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return diagnose_run(session, run, settings.datasets_dir), runs.epoch_rows(session, run_id)


def _by_code(report: RunDiagnosis) -> dict[str, Finding]:
    return {finding.code: finding for finding in report.findings}


def _mean_gap(rows: list[dict], epochs: range) -> float:
    return mean(row["val_loss"] - row["loss"] for row in rows if row["epoch"] in epochs)


def test_slow_batchnorm_is_batchnorm_lag_and_its_suggestion_closes_the_gap(
    settings: Settings, database: Database, make_run: MakeRun
) -> None:
    # 8 steps an epoch at momentum 0.99: the averages keep 92% of their start.
    report, rows = _train_and_diagnose(settings, database, make_run(bn_momentum=0.99))
    finding = _by_code(report)["batchnorm_lag"]
    assert finding.severity in {"warning", "critical"}
    assert report.findings[0] is finding
    # The evidence's epoch is the widest gap, and most of it is the lag there.
    quoted = int(re.match(r"at epoch (\d+),", finding.evidence).group(1))  # type: ignore[union-attr]
    widest = max(rows, key=lambda row: row["val_loss"] - row["loss"])
    assert quoted == widest["epoch"]
    lag = widest["val_loss"] - widest["val_loss_recalibrated"]
    assert lag > 0.5 * (widest["val_loss"] - widest["loss"])
    assert f"{widest['bn_init_weight']:.0%} of their initial values" in finding.evidence
    assert finding.suggestion["bn_momentum"] < 0.99
    # The lag is counted once: what is left for generalisation at the widest
    # gap is small next to the lag, not a large negative correction.
    (part,) = [r for r in report.decomposition if r.epoch == widest["epoch"]]
    assert part.generalisation is not None and abs(part.generalisation) < 0.5 * part.bn_lag

    fixed, fixed_rows = _train_and_diagnose(settings, database, make_run(**finding.suggestion))
    assert "batchnorm_lag" not in _by_code(fixed)
    assert _mean_gap(fixed_rows, range(2, 4)) * 3 <= _mean_gap(rows, range(2, 4))


def test_a_run_built_to_overfit_is_overfitting_not_batchnorm_lag(
    settings: Settings, database: Database, make_run: MakeRun, make_dataset: MakeDataset
) -> None:
    # Noise images, no BatchNorm, a network large enough to memorise them.
    run_id = make_run(
        dataset=make_dataset(random_labels=True),
        batch_norm=False,
        filters=[16, 32],
        dense_units=128,
        epochs=20,
    )
    report, _ = _train_and_diagnose(settings, database, run_id)
    found = _by_code(report)
    assert found["overfitting"].severity == "warning"
    assert found["overfitting"].suggestion == {"dropout": 0.25, "early_stopping_patience": 3}
    assert "batchnorm_lag" not in found


def test_a_learning_rate_of_10_is_lr_too_high(
    settings: Settings, database: Database, make_run: MakeRun
) -> None:
    report, _ = _train_and_diagnose(settings, database, make_run(learning_rate=10.0))
    finding = _by_code(report)["lr_too_high"]
    assert finding.severity in {"warning", "critical"}
    assert finding.suggestion == {"learning_rate": 1.0}
    assert "underfitting" not in _by_code(report)


def test_a_learning_rate_too_small_to_move_is_underfitting(
    settings: Settings, database: Database, make_run: MakeRun
) -> None:
    report, _ = _train_and_diagnose(settings, database, make_run(learning_rate=1e-6))
    finding = _by_code(report)["underfitting"]
    assert finding.suggestion == {"learning_rate": 1e-5}
    assert "lr_too_high" not in _by_code(report)


def test_a_healthy_run_gets_information_only(
    settings: Settings, database: Database, make_run: MakeRun
) -> None:
    # Still improving at its last epoch, validation below the reported loss,
    # 15 validation images: each is worth saying, none is a problem.
    report, _ = _train_and_diagnose(settings, database, make_run(batch_norm=False, epochs=4))
    assert {finding.severity for finding in report.findings} == {"info"}
    assert {"not_converged", "train_mode_gap", "noisy_validation"} <= set(_by_code(report))
    assert all(row.bn_lag == 0.0 for row in report.decomposition)


def test_copied_images_and_a_large_class_are_leakage_and_imbalance(
    settings: Settings, database: Database, make_run: MakeRun, make_dataset: MakeDataset
) -> None:
    dataset = make_dataset(per_class=(40, 8, 8), copies=3)
    report, _ = _train_and_diagnose(settings, database, make_run(dataset=dataset, epochs=1))
    found = _by_code(report)
    assert found["data_leakage"].evidence.startswith("3 of 12 validation images (25%)")
    assert found["data_leakage"].severity == "critical"
    assert found["class_imbalance"].evidence.startswith(
        "'horizontal' has 40 images and 'vertical' 8 (5.0×)"
    )
