"""run_view and run_tables: what the run pages say, as plain functions."""

from __future__ import annotations

import csv
import io

import pytest

from frontend import run_tables, run_view

CONFIG = {
    "image_size": [50, 55],
    "color_mode": "rgb",
    "filters": [8, 16],
    "batch_norm": True,
    "bn_momentum": 0.99,
    "optimizer": "adam",
    "learning_rate": 0.001,
    "early_stopping_patience": None,
    "epochs": 10,
    "augment": {"flip": False, "rotate": 0.0, "zoom": 0.1},
    "gap_probes": True,
    "label_smoothing": 0.1,  # a field the UI does not know yet is still shown
}


def test_every_field_is_listed_optimizer_first() -> None:
    groups = run_view.config_groups(CONFIG)
    assert [title for title, _ in groups] == [
        "Optimizer",
        "Schedule",
        "Network",
        "Data",
        "Other",
    ]
    assert groups[0][1] == [("optimizer", "adam"), ("learning_rate", "0.001")]
    shown = dict(pair for _, pairs in groups for pair in pairs)
    assert len(shown) == len(run_view.flatten_config(CONFIG))
    assert shown["image_size"] == "50×55"
    assert shown["filters"] == "8, 16"
    assert shown["batch_norm"] == "on"
    assert shown["early_stopping_patience"] == "—"
    assert shown["augment.zoom"] == "0.1"
    assert shown["gap_probes"] == "on"
    assert groups[-1][1] == [("label_smoothing", "0.1")]


def test_differing_fields_only_in_display_order() -> None:
    other = {**CONFIG, "learning_rate": 0.01, "augment": {**CONFIG["augment"], "flip": True}}
    assert run_view.differing_fields([CONFIG, other]) == ["learning_rate", "augment.flip"]
    assert run_view.differing_fields([CONFIG, dict(CONFIG)]) == []
    assert run_view.differing_fields([CONFIG]) == []
    missing = {k: v for k, v in CONFIG.items() if k != "gap_probes"}
    assert run_view.differing_fields([CONFIG, missing]) == ["gap_probes"]


def test_progress_and_eta_from_the_mean_epoch_time() -> None:
    run = {"status": "running", "epochs_done": 2, "config": {"epochs": 10}}
    epochs = [
        {"epoch": 1, "seconds": 4.0, "images_per_sec": 100.0},
        {"epoch": 2, "seconds": 2.0, "images_per_sec": 200.0},
    ]
    done = run_view.progress(run, epochs)
    assert (done.done, done.total, done.fraction) == (2, 10, 0.2)
    assert done.eta_s == pytest.approx(3.0 * 8)
    assert done.epoch_s == 2.0 and done.images_per_sec == 200.0
    final = run_view.progress({**run, "status": "succeeded"}, epochs)
    assert final.eta_s is None
    queued = run_view.progress({"status": "queued", "epochs_done": 0, "config": {"epochs": 5}}, [])
    assert queued.fraction == 0 and queued.eta_s is None and queued.epoch_s is None


def test_best_ignores_gaps() -> None:
    epochs = [
        {"epoch": 1, "val_loss": 0.9, "val_accuracy": 0.4},
        {"epoch": 2, "val_loss": None, "val_accuracy": 0.7},
        {"epoch": 3, "val_loss": 0.5, "val_accuracy": 0.6},
    ]
    assert run_view.best(epochs) == {
        "val_loss": 0.5,
        "val_loss_epoch": 3,
        "val_accuracy": 0.7,
        "val_accuracy_epoch": 2,
    }
    assert run_view.best([])["val_loss"] is None


def test_metrics_csv_has_every_metric_as_a_column() -> None:
    text = run_view.metrics_csv([{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5, "lr": 0.1}])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["epoch", "loss", "lr"]
    assert rows[1] == {"epoch": "2", "loss": "0.5", "lr": "0.1"}


def test_durations_and_labels() -> None:
    assert run_view.format_duration(42.4) == "42 s"
    assert run_view.format_duration(125) == "2 min 05 s"
    assert run_view.format_duration(3 * 3600 + 60) == "3 h 01 min"
    labels = run_view.run_labels(
        [
            {"id": "aaaaaaaa1", "name": "x"},
            {"id": "bbbbbbbb2", "name": "x"},
            {"id": "c", "name": "y"},
        ]
    )
    assert labels == {"aaaaaaaa1": "x · aaaaaaaa", "bbbbbbbb2": "x · bbbbbbbb", "c": "y"}


def test_compare_rows_put_runs_in_columns() -> None:
    runs = [
        {
            "id": "r1",
            "status": "succeeded",
            "epochs_done": 10,
            "config": CONFIG,
            "dataset_id": "d",
            "best_val_loss": 0.5,
            "best_val_accuracy": 0.8,
            "duration_s": 75.0,
        },
        {
            "id": "r2",
            "status": "running",
            "epochs_done": 3,
            "config": {**CONFIG, "bn_momentum": 0.9},
            "dataset_id": "d",
        },
    ]
    rows = run_tables.compare_rows(runs, {"r1": "slow", "r2": "fast"}, {"d": "letters"})
    table = {row[""]: (row["slow"], row["fast"]) for row in rows}
    assert table["bn_momentum"] == ("0.99", "0.9")
    assert table["best val_loss"] == ("0.5000", "—")
    assert table["epochs"] == ("10 / 10", "3 / 10")
    assert table["duration"] == ("1 min 15 s", "—")
    assert "dataset" not in table and "optimizer" not in table


def test_stored_fields_no_longer_known_are_shown_apart() -> None:
    unknown = {"legacy_knob": 3, "augment": {"shear": 0.2}}
    groups = run_view.config_groups(CONFIG, unknown)
    assert groups[-1] == (
        run_view.UNUSED_GROUP,
        [("legacy_knob", "3"), ("augment.shear", "0.2")],
    )
    assert run_view.config_groups(CONFIG, {}) == run_view.config_groups(CONFIG)


def test_tables_of_several_runs_show_the_unknown_fields_marked() -> None:
    old = {"id": "r1", "status": "succeeded", "config": CONFIG}
    old["config_unknown"] = {"legacy_knob": 3}
    new = {"id": "r2", "status": "succeeded", "config": CONFIG, "config_unknown": {}}
    assert run_view.comparable_config(old)["legacy_knob (not used)"] == 3
    rows = run_tables.compare_rows([old, new], {"r1": "old", "r2": "new"}, {})
    by_name = {row[""]: row for row in rows}
    assert by_name["legacy_knob (not used)"] == {
        "": "legacy_knob (not used)",
        "old": "3",
        "new": "—",
    }
    _, fields = run_tables.runs_rows([old, new], {})
    assert fields == ["legacy_knob (not used)"]


def test_an_application_runs_config_leaves_out_the_conv_bn_knobs() -> None:
    resnet = {**CONFIG, "architecture": "resnet50", "dense_units": 512}
    shown = dict(pair for _, pairs in run_view.config_groups(resnet) for pair in pairs)
    assert shown["architecture"] == "resnet50"
    assert "filters" not in shown and "batch_norm" not in shown and "dense_units" not in shown
    assert shown["bn_momentum"] == "0.99"  # every BN layer of the application
    conv_bn = dict(pair for _, pairs in run_view.config_groups(CONFIG) for pair in pairs)
    assert conv_bn["filters"] == "8, 16"


def test_tables_of_several_runs_name_the_architecture_and_only_knobs_it_uses() -> None:
    conv = {"id": "r1", "status": "succeeded", "config": {**CONFIG, "architecture": "conv_bn"}}
    resnet = {"id": "r2", "status": "succeeded", "config": {**CONFIG, "architecture": "resnet50"}}
    # Stored conv_bn knobs that differ between two applications train nothing.
    mobile = {
        "id": "r3",
        "status": "succeeded",
        "config": {**CONFIG, "architecture": "mobilenet_v3_small", "filters": [4]},
    }
    rows = run_tables.compare_rows([conv, resnet], {"r1": "conv", "r2": "resnet"}, {})
    table = {row[""]: (row["conv"], row["resnet"]) for row in rows}
    assert table["architecture"] == ("conv_bn", "resnet50")
    assert table["filters"] == ("8, 16", "—") and table["batch_norm"] == ("on", "—")
    rows = run_tables.compare_rows([resnet, mobile], {"r2": "resnet", "r3": "mobile"}, {})
    names = {row[""] for row in rows}
    assert "architecture" in names and "filters" not in names
