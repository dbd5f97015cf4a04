"""read_stored_config: a config stored by any version reads back, never raises.

Missing fields take their defaults, unknown ones are set aside (nested too),
values out of today's bounds take their defaults with a note that names them;
RunPublic carries all three.
"""

from __future__ import annotations

from typing import Any

import pytest

from backend.api.schemas import RunPublic
from backend.train_config import PRESETS, Augment, TrainConfig, read_stored_config


def test_a_current_config_reads_as_itself() -> None:
    for _, config in PRESETS.values():
        stored = read_stored_config(config.model_dump(mode="json"))
        assert stored.config == config
        assert (stored.unknown, stored.notes) == ({}, [])


def test_missing_fields_take_their_defaults() -> None:
    # The first version's shape: no mixed_precision, jit_compile or gap_probes.
    stored = read_stored_config({"filters": [8, 16], "image_size": [32, 32], "epochs": 3})
    assert stored.config == TrainConfig(filters=[8, 16], image_size=(32, 32), epochs=3)
    assert stored.config.gap_probes is True and stored.config.mixed_precision is False
    assert (stored.unknown, stored.notes) == ({}, [])


def test_unknown_fields_are_kept_apart_nested_as_stored() -> None:
    raw = {
        "legacy_knob": 3,
        "lr": 0.01,  # a field since renamed: its value is shown, the new name defaults
        "augment": {"flip": True, "shear": 0.1},
        "dropout": 0.25,
    }
    stored = read_stored_config(raw)
    assert stored.unknown == {"legacy_knob": 3, "lr": 0.01, "augment": {"shear": 0.1}}
    assert stored.config.augment == Augment(flip=True)
    assert stored.config.dropout == 0.25 and stored.config.learning_rate == 1e-3
    assert stored.notes == []
    assert raw["augment"] == {"flip": True, "shear": 0.1}  # the stored dict is not changed


@pytest.mark.parametrize(
    ("raw", "field", "default"),
    [
        ({"epochs": 5000}, "epochs", 20),
        ({"learning_rate": -1}, "learning_rate", 0.001),
        ({"optimizer": "adagrad"}, "optimizer", "'adam'"),
        ({"augment": {"rotate": 2.0, "flip": True}}, "augment.rotate", 0.0),
        ({"augment": "flip"}, "augment", "{'flip': False"),
        ({"filters": [8, 0]}, "filters", "[64, 128, 256, 512]"),
        ({"image_size": [4, 4], "filters": [8, 8, 8]}, "image_size", "[50, 55]"),
    ],
)
def test_a_value_out_of_todays_bounds_takes_its_default_with_a_note(
    raw: dict[str, Any], field: str, default: object
) -> None:
    stored = read_stored_config({**raw, "dense_units": 16})
    assert stored.config.dense_units == 16  # the rest is kept
    assert any(note.startswith(f"{field}: the stored value ") for note in stored.notes)
    assert any(f"it takes the default {default}" in note for note in stored.notes), stored.notes


@pytest.mark.parametrize("raw", [None, [], "rgb", 3, {"augment": None, "seed": "x"}])
def test_anything_at_all_reads_as_a_config(raw: Any) -> None:
    stored = read_stored_config(raw)
    assert isinstance(stored.config, TrainConfig)
    assert stored.notes


def test_run_public_carries_the_config_its_unknown_fields_and_notes() -> None:
    row = {
        "id": "a" * 32,
        "name": "old",
        "dataset_id": None,
        "class_names": ["a", "b"],
        "config": {"legacy_knob": 3, "epochs": 5000, "dense_units": 16},
        "status": "succeeded",
        "epochs_done": 2,
        "error": None,
        "resumed_at_epoch": None,
        "created_at": "2026-11-26T12:00:00Z",
        "started_at": None,
        "finished_at": None,
    }
    public = RunPublic.model_validate(row)
    assert public.config == TrainConfig(dense_units=16)
    assert public.config_unknown == {"legacy_knob": 3}
    assert len(public.config_notes) == 1 and public.config_notes[0].startswith("epochs:")
    # A client reading the API's answer back gets the same, not a second reading.
    again = RunPublic.model_validate(public.model_dump(mode="json"))
    assert again == public
