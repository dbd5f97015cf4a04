"""The gap decomposition and the rules about what the gap is made of:
batchnorm_lag, train_mode_gap, overfitting, on hand-written histories."""

from __future__ import annotations

import pytest

from backend.diagnosis.gap import decompose
from backend.diagnosis.gap_rules import batchnorm_lag, overfitting, train_mode_gap
from backend.diagnosis.run_facts import RunFacts
from backend.train_config import TrainConfig
from tests.backend.histories import facts, history

# The facts of a worker's run: its TrainConfig and dataset facts.
worker = RunFacts.from_config

# The question's situation (40 steps an epoch, momentum 0.99): the training
# sample evaluated like validation is as bad as validation, and re-estimated
# BatchNorm statistics make validation good.
LAGGING = history(
    loss=[2.9, 1.6, 0.95, 0.69, 0.45, 0.3],
    val_loss=[3.6, 4.5, 4.2, 3.71, 2.1, 0.9],
    train_eval_loss=[3.5, 4.4, 4.0, 3.57, 1.9, 0.7],
    train_eval_loss_recalibrated=[2.4, 1.1, 0.5, 0.30, 0.27, 0.22],
    val_loss_recalibrated=[2.5, 1.2, 0.6, 0.34, 0.3, 0.28],
    val_accuracy=[0.03, 0.09, 0.1, 0.14, 0.5, 0.8],
    val_accuracy_recalibrated=[0.4, 0.7, 0.85, 0.91, 0.92, 0.93],
    bn_init_weight=[0.99 ** (40 * epoch) for epoch in range(1, 7)],
)
QUESTION = TrainConfig(filters=[8, 16, 32, 64], dense_units=64, epochs=6)
QUESTION_FACTS = facts(counts=(214,) * 30, val_images=1290)  # 5130 training images


def test_the_parts_add_up_to_the_gap() -> None:
    rows = decompose(LAGGING, batch_norm=True)
    assert [row.epoch for row in rows] == [1, 2, 3, 4, 5, 6]
    fourth = rows[3]
    assert fourth.gap == pytest.approx(3.71 - 0.69)
    # The training sample with re-estimated statistics: the lag is counted
    # once, in bn_lag, and the generalisation gap is the small positive rest.
    assert fourth.train_mode == pytest.approx(0.30 - 0.69)
    assert fourth.bn_lag == pytest.approx(3.71 - 0.34)
    assert fourth.generalisation == pytest.approx(0.34 - 0.30)
    for row in rows:
        assert row.train_mode + row.bn_lag + row.generalisation == pytest.approx(row.gap)


def test_without_the_recalibrated_training_sample_the_plain_one_is_used() -> None:
    old = history(
        loss=[0.69], val_loss=[3.71], train_eval_loss=[3.57], val_loss_recalibrated=[0.34]
    )
    (row,) = decompose(old, batch_norm=True)
    assert row.train_mode == pytest.approx(3.57 - 0.69)
    assert row.generalisation == pytest.approx(0.34 - 3.57)


def test_missing_probes_leave_parts_unknown_and_no_batchnorm_means_no_lag() -> None:
    plain = history(loss=[1.0, None], val_loss=[1.2, 1.1])
    first, second = decompose(plain, batch_norm=True)
    assert first.gap == pytest.approx(0.2)
    assert first.train_mode is None and first.bn_lag is None and first.generalisation is None
    assert second.gap is None  # a NaN loss
    (row,) = decompose(history(loss=[1.0], val_loss=[1.5], train_eval_loss=[1.1]), False)
    assert row.bn_lag == 0.0 and row.generalisation == pytest.approx(0.4)


def test_batchnorm_lag_quotes_the_widest_gap_and_suggests_a_faster_momentum() -> None:
    finding = batchnorm_lag(LAGGING, worker(QUESTION, QUESTION_FACTS))
    assert finding is not None
    assert (finding.code, finding.severity) == ("batchnorm_lag", "critical")
    assert finding.evidence.startswith(
        "at epoch 3, all of the gap between val_loss 4.20 and loss 0.95 disappears"
    )
    assert "val_loss 0.60, val_accuracy 0.85 instead of 0.10" in finding.evidence
    assert "still carry 30% of their initial values (momentum 0.99)" in finding.evidence
    # 0.95 ** 40 = 0.13 leaves too much; 0.9 ** 40 = 0.015 does not.
    assert finding.suggestion == {"bn_momentum": 0.9}
    # Without the dataset, bn_init_weight tells the steps per epoch.
    assert batchnorm_lag(LAGGING, worker(QUESTION, None)).suggestion == {"bn_momentum": 0.9}


def test_batchnorm_lag_is_a_warning_when_it_is_only_most_of_the_gap() -> None:
    half = history(loss=[0.5], val_loss=[1.5], train_eval_loss=[0.6], val_loss_recalibrated=[0.9])
    finding = batchnorm_lag(half, worker(QUESTION, QUESTION_FACTS))
    assert finding is not None and finding.severity == "warning"
    assert "at epoch 1, 60% of the gap" in finding.evidence


def test_no_batchnorm_lag_when_recalibration_changes_little_or_there_is_no_batchnorm() -> None:
    settled = history(loss=[1.0, 0.6], val_loss=[1.3, 0.9], val_loss_recalibrated=[1.25, 0.88])
    assert batchnorm_lag(settled, worker(QUESTION, QUESTION_FACTS)) is None
    assert (
        batchnorm_lag(LAGGING, worker(QUESTION.model_copy(update={"batch_norm": False}), None))
        is None
    )
    no_probes = history(loss=[1.0], val_loss=[3.0])
    assert batchnorm_lag(no_probes, worker(QUESTION, None)) is None


def test_train_mode_gap_explains_validation_below_the_reported_loss() -> None:
    below = history(
        loss=[1.2, 0.9, 0.8], val_loss=[1.0, 0.7, 0.65], train_eval_loss=[1.0, 0.66, 0.6]
    )
    finding = train_mode_gap(below, worker(TrainConfig(dropout=0.3), None))
    assert finding is not None and finding.severity == "info" and finding.suggestion == {}
    assert finding.evidence.startswith("at epoch 2, val_loss 0.70 is below the reported")
    assert "with dropout 0.3 on" in finding.evidence
    assert finding.evidence.endswith("the training sample scores 0.66")


def test_no_train_mode_gap_when_validation_is_above_training() -> None:
    above = history(loss=[1.2, 0.9], val_loss=[1.25, 0.88])  # within 5% is not worth a word
    assert train_mode_gap(above, worker(TrainConfig(), None)) is None


OVERFITTING = history(
    loss=[1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1],
    val_loss=[1.0, 0.8, 0.75, 0.8, 0.9, 1.0, 1.1],
)


def test_overfitting_when_validation_rises_for_epochs_while_training_falls() -> None:
    finding = overfitting(OVERFITTING, worker(TrainConfig(batch_norm=False), None))
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence == (
        "val_loss rose from 0.75 at epoch 3 (its best) to 1.10 at epoch 7 while the training "
        "loss fell from 0.50 to 0.10; the gap grew from 0.25 to 1.00"
    )
    assert finding.suggestion == {"dropout": 0.25, "early_stopping_patience": 3}
    config = TrainConfig(dropout=0.3, early_stopping_patience=5)
    assert set(overfitting(OVERFITTING, worker(config, None)).suggestion) == {"augment"}  # type: ignore[union-attr]


def test_overfitting_needs_recalibrated_validation_to_rise_too() -> None:
    recalibrated = {"val_loss_recalibrated": [0.9, 0.7, 0.6, 0.55, 0.5, 0.45, 0.4]}
    lagging = history(**OVERFITTING_COLUMNS, **recalibrated)
    assert overfitting(lagging, worker(TrainConfig(), None)) is None  # BatchNorm's, not memorising
    rising = {"val_loss_recalibrated": [0.9, 0.7, 0.6, 0.7, 0.8, 0.9, 1.0]}
    finding = overfitting(history(**OVERFITTING_COLUMNS, **rising), worker(TrainConfig(), None))
    assert finding is not None
    assert finding.evidence.endswith("do not remove it (val_loss 0.60 → 1.00)")


OVERFITTING_COLUMNS = {key: [row[key] for row in OVERFITTING] for key in ("loss", "val_loss")}


@pytest.mark.parametrize(
    "val_loss",
    [
        [1.0, 0.8, 0.7, 0.65, 0.6, 0.55, 0.5],  # still falling
        [1.0, 0.8, 0.7, 0.65, 0.6, 0.55, 0.62],  # one epoch up: not a trend
        [1.0, 0.8, 0.75, 0.76, 0.77, 0.77, 0.78],  # up by less than 10%
    ],
)
def test_no_overfitting_without_a_sustained_rise(val_loss: list[float]) -> None:
    rows = history(loss=OVERFITTING_COLUMNS["loss"], val_loss=val_loss)
    assert overfitting(rows, worker(TrainConfig(batch_norm=False), None)) is None
