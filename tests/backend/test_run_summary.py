"""The summary rule the runs list sorts by: one for the app and migration 0005."""

from __future__ import annotations

import math

from backend.run_summary import COLUMNS, summarise


def test_best_values_take_the_earliest_epoch_and_skip_what_is_not_finite() -> None:
    epochs = [
        (3, {"val_loss": 0.5, "val_accuracy": 0.8, "seconds": 2.0, "images_per_sec": 100.0}),
        (1, {"val_loss": math.nan, "val_accuracy": 0.4, "seconds": 4.0, "images_per_sec": 50.0}),
        (2, {"val_loss": 0.5, "val_accuracy": 0.9, "seconds": 3.0}),
        (4, {"val_loss": math.inf, "val_accuracy": 0.9, "seconds": None, "images_per_sec": 75.0}),
    ]
    found = summarise(epochs)
    assert found["best_val_loss"] == 0.5 and found["best_val_loss_epoch"] == 2
    assert found["best_val_accuracy"] == 0.9 and found["best_val_accuracy_epoch"] == 2
    assert found["duration_s"] == 9.0
    assert found["images_per_sec"] == 75.0


def test_a_run_without_epochs_or_values_has_an_empty_summary() -> None:
    assert summarise([]) == dict.fromkeys(COLUMNS)
    found = summarise([(1, {"loss": 1.0, "val_loss": "x", "val_accuracy": True})])
    assert found == dict.fromkeys(COLUMNS)
