"""Every rule of the diagnosis, in the order findings of one severity are shown.

A rule is a plain function ``(history, facts) -> Finding | None`` over the
stored epochs and the run's :class:`~backend.diagnosis.run_facts.RunFacts`
(from a TrainConfig or from an external run's FitSummary alike), so each one
is tested on hand-written histories.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from backend.diagnosis.data_rules import class_imbalance, data_leakage, noisy_validation
from backend.diagnosis.findings import Finding, most_severe_first
from backend.diagnosis.fit_rules import lr_too_high, not_converged, underfitting
from backend.diagnosis.gap_rules import batchnorm_lag, overfitting, train_mode_gap
from backend.diagnosis.history import History
from backend.diagnosis.keras_code import patch_code
from backend.diagnosis.run_facts import RunFacts

Rule = Callable[[History, RunFacts], Finding | None]

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


def diagnose(history: History, facts: RunFacts) -> list[Finding]:
    """The findings of every rule that fires, most severe first, each with its
    suggestion also written as the Keras code to change."""
    return most_severe_first(
        with_code(finding, facts) if finding is not None else None
        for finding in (rule(history, facts) for rule in RULES)
    )


def with_code(finding: Finding, facts: RunFacts) -> Finding:
    return dataclasses.replace(finding, keras_code=patch_code(finding.suggestion, facts))
