"""Rules about how training went: lr_too_high, underfitting, not_converged,
on hand-written histories."""

from __future__ import annotations

import pytest

from backend.diagnosis.fit_rules import lr_too_high, not_converged, underfitting
from backend.diagnosis.run_facts import RunFacts
from backend.train_config import TrainConfig
from tests.backend.histories import facts, history

# The facts of a worker's run: its TrainConfig and dataset facts.
worker = RunFacts.from_config

THREE_CLASSES = facts(counts=(400, 400, 400))
TEN_CLASSES = facts(counts=(100,) * 10, val_images=200)
HEALTHY = history(
    loss=[1.0, 0.6, 0.4, 0.3], val_loss=[0.9, 0.6, 0.45, 0.4], accuracy=[0.5, 0.8, 0.9, 0.93]
)


def test_a_nan_loss_is_critical_and_suggests_a_tenth_of_the_rate() -> None:
    finding = lr_too_high(history(loss=[2.0, None, None]), worker(TrainConfig(), THREE_CLASSES))
    assert finding is not None and finding.severity == "critical"
    assert finding.evidence == (
        "the training loss became NaN or infinite at epoch 2 (learning rate 0.001, adam)"
    )
    assert finding.suggestion == {"learning_rate": 0.0001}


@pytest.mark.parametrize(
    ("losses", "evidence"),
    [
        ([50.0, 10.0, 8.0], "the training loss reached 50.00 at epoch 1, 46× the 1.10 of"),
        ([1.0, 0.5, 0.7], "the training loss rose to 0.70 at epoch 3, from a best of 0.50"),
        ([1.0, 0.8, 0.9, 0.75, 0.85], "the training loss went up and down: 0.80 → 0.90 at"),
    ],
)
def test_explosion_divergence_and_oscillation_are_warnings(
    losses: list[float], evidence: str
) -> None:
    finding = lr_too_high(
        history(loss=losses), worker(TrainConfig(learning_rate=10.0), THREE_CLASSES)
    )
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence.startswith(evidence), finding.evidence
    assert finding.suggestion == {"learning_rate": 1.0}


def test_a_falling_loss_is_not_a_high_learning_rate() -> None:
    assert lr_too_high(HEALTHY, worker(TrainConfig(), THREE_CLASSES)) is None
    assert lr_too_high(history(loss=[1.0, 0.8, 0.85, 0.7]), worker(TrainConfig(), None)) is None


FLAT = history(
    loss=[2.25, 2.2, 2.19, 2.18],
    val_loss=[2.26, 2.22, 2.21, 2.2],
    accuracy=[0.12, 0.15, 0.16, 0.16],
)


def test_wobbles_near_zero_loss_are_not_a_high_learning_rate() -> None:
    # +40% relative, but 0.007 nats: noise at the end of a converged run.
    losses = [0.5, 0.1, 0.03, 0.017, 0.024, 0.018, 0.025]
    assert lr_too_high(history(loss=losses), worker(TrainConfig(), THREE_CLASSES)) is None


def test_underfitting_when_both_losses_stay_high_and_flat() -> None:
    finding = underfitting(FLAT, worker(TrainConfig(filters=[8, 16], dense_units=32), TEN_CLASSES))
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence == (
        "from epoch 2 to 4 the training loss went from 2.20 to 2.18 (guessing uniformly "
        "scores 2.30), val_loss is 2.20, and training accuracy is 0.16 where chance is 0.10"
    )
    assert finding.suggestion == {"filters": [16, 32], "dense_units": 64}
    slow = underfitting(FLAT, worker(TrainConfig(learning_rate=1e-6), TEN_CLASSES))
    assert slow is not None and slow.suggestion == {"learning_rate": 1e-5}
    dropped = underfitting(FLAT, worker(TrainConfig(dropout=0.5), TEN_CLASSES))
    assert dropped is not None and dropped.suggestion == {"dropout": 0.0}


def test_no_underfitting_while_learning_or_without_class_count() -> None:
    assert underfitting(HEALTHY, worker(TrainConfig(), THREE_CLASSES)) is None
    assert underfitting(FLAT, worker(TrainConfig(), None)) is None
    accurate = history(loss=[2.2, 2.19, 2.18], val_loss=[2.2] * 3, accuracy=[0.7, 0.7, 0.7])
    assert underfitting(accurate, worker(TrainConfig(), TEN_CLASSES)) is None
    # A loss thrown far above chance is lr_too_high's finding, not this one.
    exploded = history(loss=[90.0, 88.0, 88.0], val_loss=[80.0] * 3, accuracy=[0.1] * 3)
    assert underfitting(exploded, worker(TrainConfig(), TEN_CLASSES)) is None


def test_not_converged_when_the_last_epoch_still_improved() -> None:
    finding = not_converged(HEALTHY, worker(TrainConfig(epochs=4), THREE_CLASSES))
    assert finding is not None and finding.severity == "info"
    assert finding.evidence.startswith("val_loss fell from 0.45 to 0.40 at the last epoch (4)")
    assert finding.suggestion == {"epochs": 6}


def test_converged_or_still_training_is_not_flagged() -> None:
    settled = history(loss=[1.0, 0.6, 0.5], val_loss=[0.9, 0.6, 0.598])
    assert not_converged(settled, worker(TrainConfig(epochs=3), None)) is None
    # While the run trains, its last recorded epoch is not its last.
    assert not_converged(HEALTHY, worker(TrainConfig(epochs=10), None)) is None
