"""Early stopping of a sweep's hopeless runs: its Optuna pruner, asked after
each recorded epoch.

The recorder calls ``after_epoch`` on its writer thread once SQL took the
epoch (a fenced, stale trainer reports nothing). The epoch's value of the
sweep's metric is reported to the run's trial; when the pruner says stop,
training stops at the next batch and ``reason`` says why, in numbers, for the
run's error (runner.py finishes it "pruned"). A failing pruner warns and
never stops training: it is a side channel.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping
from typing import Any

import keras
import optuna
from optuna.trial import TrialState
from sqlalchemy.orm import Session

from backend import sweep_study
from backend.db import Run, Sweep
from backend.settings import Settings

log = logging.getLogger(__name__)


class SweepPruning(keras.callbacks.Callback):
    """Holds the model (Keras gives it) to stop it; hooks no batch."""

    def __init__(self, trial: optuna.trial.Trial, metric: str, epochs: int) -> None:
        super().__init__()
        self.trial = trial
        self.metric = metric
        self.epochs = epochs
        self.reason: str | None = None

    def after_epoch(self, epoch: int, values: Mapping[str, Any]) -> None:
        """Report the epoch (1-based) and stop training when the pruner says so."""
        value = values.get(self.metric)
        if self.reason is not None or not isinstance(value, int | float):
            return
        try:
            self.trial.report(float(value), epoch)
            # The last epoch is trained already: nothing left to save.
            if epoch >= self.epochs or not self.trial.should_prune():
                return
            self.reason = self._why(epoch, float(value))
        except Exception as exc:  # never stops training by itself
            log.warning("sweep pruner of trial %d: %s", self.trial.number, exc)
            return
        log.info("trial %d: %s", self.trial.number, self.reason)
        self.model.stop_training = True

    def _why(self, epoch: int, value: float) -> str:
        study = self.trial.study
        pruner = study.pruner
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        seen = [t.intermediate_values[epoch] for t in done if epoch in t.intermediate_values]
        what = f"pruned at epoch {epoch}: {self.metric} {value:.4g}"
        if isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner):
            return f"{what} is not in the best third of the runs that reached that epoch"
        worse = "lower" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "higher"
        if not seen:
            return f"{what} is {worse} than the finished runs reached"
        median = statistics.median(seen)
        return (
            f"{what} is {worse} than the median {median:.4g} of the {len(seen)} finished "
            f"run{'s' if len(seen) != 1 else ''} at that epoch"
        )


def for_run(session: Session, settings: Settings, run: Run, epochs: int) -> SweepPruning | None:
    """The pruning callback of a sweep's run whose sweep prunes; None otherwise
    (or when the study cannot be opened: the run trains unpruned, and warns)."""
    if run.sweep_id is None or run.trial_number is None:
        return None
    sweep = session.get(Sweep, run.sweep_id)
    if sweep is None or sweep.prune is None:
        return None
    try:
        storage = sweep_study.storage(settings)
        name = sweep_study.study_name(sweep.id)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(name), run.trial_number
        )
        study = optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(),  # asks nothing here
            pruner=sweep_study.pruner(sweep),
        )
        trial = optuna.trial.Trial(study, trial_id)
    except Exception as exc:
        log.warning("run %s: its sweep's pruner is unavailable (%s); not pruned", run.id, exc)
        return None
    return SweepPruning(trial, sweep.metric, epochs)
