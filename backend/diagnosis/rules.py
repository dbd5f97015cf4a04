"""Every rule of the diagnosis, in the order findings of one severity are shown.

A rule is a plain function ``(history, config, facts) -> Finding | None``
over the stored epochs, so each one is tested on hand-written histories.
"""

from __future__ import annotations

from collections.abc import Callable

from backend.diagnosis.data_rules import class_imbalance, data_leakage, noisy_validation
from backend.diagnosis.facts import DatasetFacts
from backend.diagnosis.findings import Finding, most_severe_first
from backend.diagnosis.fit_rules import lr_too_high, not_converged, underfitting
from backend.diagnosis.gap_rules import batchnorm_lag, overfitting, train_mode_gap
from backend.diagnosis.history import History
from backend.train_config import TrainConfig

Rule = Callable[[History, TrainConfig, DatasetFacts | None], Finding | None]

RULES: tuple[Rule, ...] = (
    lr_too_high,
    data_leakage,
    batchnorm_lag,
    overfitting,
    underfitting,
    noisy_validation,
    class_imbalance,
    train_mode_gap,
    not_converged,
)


def diagnose(history: History, config: TrainConfig, facts: DatasetFacts | None) -> list[Finding]:
    """The findings of every rule that fires, most severe first."""
    return most_severe_first(rule(history, config, facts) for rule in RULES)
