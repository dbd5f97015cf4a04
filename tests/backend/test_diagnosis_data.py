"""Rules about the data: noisy_validation, data_leakage, class_imbalance; the
dataset facts they read; and the order findings come in."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.datasets.layout import ImageEntry, Manifest, dataset_dir
from backend.datasets.split import stratified_split
from backend.db import Dataset
from backend.diagnosis.data_rules import (
    accuracy_standard_error,
    class_imbalance,
    data_leakage,
    noisy_validation,
)
from backend.diagnosis.facts import dataset_facts
from backend.diagnosis.findings import Finding, most_severe_first
from backend.diagnosis.rules import diagnose
from backend.diagnosis.run_facts import RunFacts
from backend.train_config import TrainConfig
from tests.backend.histories import facts, history

# The facts of a worker's run: its TrainConfig and dataset facts.
worker = RunFacts.from_config


def test_a_modest_validation_set_is_information_not_a_warning() -> None:
    # 300 images at 0.9: ±0.017 is under NOISY_SE, nothing to say; 200 images
    # at 0.6: ±0.034, worth knowing (info), not a problem with the run.
    small_changes = history(val_accuracy=[0.59, 0.6, 0.605])
    assert (
        noisy_validation(
            history(val_accuracy=[0.89, 0.9, 0.905]),
            worker(TrainConfig(), facts(counts=(500,) * 3, val_images=300)),
        )
        is None
    )
    finding = noisy_validation(
        small_changes, worker(TrainConfig(), facts(counts=(300,) * 3, val_images=200))
    )
    assert finding is not None and finding.severity == "info"


def test_standard_error_is_binomial_and_never_zero() -> None:
    assert accuracy_standard_error(0.5, 1000) == pytest.approx(0.0158, abs=1e-4)
    assert accuracy_standard_error(1.0, 15) > 0.05


def test_noisy_validation_when_changes_are_within_two_standard_errors() -> None:
    rows = history(val_accuracy=[0.6, 2 / 3, 0.6])
    finding = noisy_validation(
        rows, worker(TrainConfig(), facts(counts=(25, 25, 25), val_images=15))
    )
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence.startswith(
        "validation has 15 images, so one image moves val_accuracy by 6.7 points; "
        "at val_accuracy 0.60 its standard error is ±0.11; 2 of 2 epoch-to-epoch changes "
        "(e.g. 0.67 → 0.60 at epoch 3) are smaller than two standard errors"
    )
    assert finding.evidence.endswith("About 610 validation images would bring it to ±0.02")
    assert finding.suggestion == {}  # 610 images is more than half of 75


def test_a_small_set_with_large_changes_is_info_and_may_suggest_a_larger_split() -> None:
    rows = history(val_accuracy=[0.2, 0.8, 0.95])
    finding = noisy_validation(
        rows, worker(TrainConfig(), facts(counts=(200,) * 3, val_images=120))
    )
    assert finding is not None and finding.severity == "info"
    assert finding.evidence.endswith("About 151 validation images would bring it to ±0.02")
    assert finding.suggestion == {"validation_split": 0.3}  # 151 of 600, up to a 0.05 step


def test_a_large_validation_set_is_not_noisy() -> None:
    rows = history(val_accuracy=[0.9, 0.91, 0.905])
    assert noisy_validation(rows, worker(TrainConfig(), facts(val_images=1280))) is None
    assert noisy_validation(rows, worker(TrainConfig(), None)) is None
    assert (
        noisy_validation(history(val_accuracy=[None]), worker(TrainConfig(), facts(val_images=15)))
        is None
    )


def test_data_leakage_grades_by_the_share_of_validation_seen_in_training() -> None:
    finding = data_leakage([], worker(TrainConfig(), facts(val_images=240, leaked=12)))
    assert finding is not None and finding.severity == "critical"
    assert finding.evidence.startswith("12 of 240 validation images (5%) have the same bytes")
    few = data_leakage([], worker(TrainConfig(), facts(val_images=240, leaked=3)))
    assert few is not None and few.severity == "warning"
    assert data_leakage([], worker(TrainConfig(), facts(leaked=0))) is None
    assert data_leakage([], worker(TrainConfig(), None)) is None


def test_class_imbalance_is_a_warning_when_accuracy_is_the_majority_share() -> None:
    imbalanced = facts(counts=(400, 40, 40), val_images=96)
    info = class_imbalance(history(val_accuracy=[0.95]), worker(TrainConfig(), imbalanced))
    assert info is not None and info.severity == "info"
    assert info.evidence.startswith(
        "'class0' has 400 images and 'class1' 40 (10.0×); always answering 'class0' scores "
        "accuracy 0.83"
    )
    stuck = class_imbalance(history(val_accuracy=[0.84]), worker(TrainConfig(), imbalanced))
    assert stuck is not None and stuck.severity == "warning"
    assert class_imbalance([], worker(TrainConfig(), imbalanced)) is not None  # before any epoch
    assert class_imbalance([], worker(TrainConfig(), facts(counts=(100, 40)))) is None  # 2.5×


def test_facts_count_the_split_and_the_leaked_images(tmp_path: Path) -> None:
    # 3 classes of 10; the last image of each class repeats the first one's bytes.
    images = [
        ImageEntry(f"{label:03d}/{i:05d}.png", label, f"{label}-{i % 9}", 8, 8, "L")
        for label in range(3)
        for i in range(10)
    ]
    row = Dataset(id="abc123", classes=[{"name": n, "count": 10} for n in "xyz"])
    folder = dataset_dir(tmp_path, row.id)
    folder.mkdir(parents=True)
    Manifest(classes=list("xyz"), images=images).write(folder)
    config = TrainConfig(validation_split=0.3, seed=3)
    found = dataset_facts(list("xyz"), row, config, tmp_path)
    train, val = stratified_split([image.label for image in images], 0.3, 3)
    train_sha1 = {images[i].sha1 for i in train}
    assert (found.train_images, found.val_images) == (len(train), len(val)) == (21, 9)
    assert found.leaked == sum(images[i].sha1 in train_sha1 for i in val)
    assert found.class_counts == [10, 10, 10] and found.num_classes == 3
    assert dataset_facts(["x"], None, config, tmp_path).class_counts is None
    # No manifest on disk: counts still, leakage unknown.
    other = Dataset(id="def456", classes=row.classes)
    assert dataset_facts(list("xyz"), other, config, tmp_path).leaked is None


def test_findings_come_most_severe_first_in_rule_order() -> None:
    def finding(code: str, severity: str) -> Finding:
        return Finding(code, severity, code, "", {})  # type: ignore[arg-type]

    ordered = most_severe_first(
        [finding("a", "info"), None, finding("b", "critical"), finding("c", "info")]
    )
    assert [f.code for f in ordered] == ["b", "a", "c"]
    rows = history(loss=[2.0, None], val_loss=[2.0, None], val_accuracy=[0.5, None])
    codes = [f.code for f in diagnose(rows, worker(TrainConfig(), facts(val_images=15, leaked=1)))]
    assert codes[:2] == ["lr_too_high", "data_leakage"]  # critical, critical
    assert diagnose([], worker(TrainConfig(), facts())) == []
