"""The form's mirror of TrainConfig cannot drift from it: same fields, same
defaults, ranges the API accepts; widget values and configs convert both ways;
a 422 lands on the field it names."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from backend.train_config import (
    APPLICATION_MIN_SIDE,
    APPLICATIONS,
    CONV_BN_ONLY,
    PRESETS,
    Architecture,
    Augment,
    TrainConfig,
)
from frontend import architectures
from frontend.config_form import (
    FIELDS,
    GROUPS,
    FormError,
    build_config,
    errors_by_field,
    field_error,
    shown_fields,
    widget_keys,
    widget_values,
)

NUMERIC = [f for f in FIELDS.values() if f.kind in ("int", "float", "optional_int", "size")]


def test_the_form_has_exactly_trainconfigs_fields() -> None:
    top = {name.split(".")[0] for name in FIELDS}
    nested = {name.split(".")[1] for name in FIELDS if name.startswith("augment.")}
    assert top == set(TrainConfig.model_fields)
    assert nested == set(Augment.model_fields)


def test_the_forms_defaults_are_trainconfigs() -> None:
    assert build_config(widget_values({})) == TrainConfig().model_dump(mode="json")


@pytest.mark.parametrize("field", NUMERIC, ids=lambda f: f.name)
@pytest.mark.parametrize("end", ["min", "max"])
def test_every_value_the_widgets_allow_passes_the_apis_bounds(field, end: str) -> None:
    values = widget_values({"filters": [8]})  # one block: any image size fits
    for key in widget_keys(field):
        values[key] = getattr(field, end)
    TrainConfig.model_validate(build_config(values))


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_the_widgets(name: str) -> None:
    config = PRESETS[name][1].model_dump(mode="json")
    assert build_config(widget_values(config)) == config


def test_widget_values_speak_the_widgets_language() -> None:
    values = widget_values(
        {"image_size": [32, 40], "filters": [8, 16], "early_stopping_patience": None}
    )
    assert (values["cfg.image_size.0"], values["cfg.image_size.1"]) == (32, 40)
    assert values["cfg.filters"] == "8, 16"
    assert values["cfg.early_stopping_patience"] == 0  # 0 = off
    values["cfg.early_stopping_patience"] = 5
    assert build_config(values)["early_stopping_patience"] == 5


def test_an_odd_stored_value_is_moved_into_the_widgets_range() -> None:
    # A number input refuses a value outside its bounds instead of showing it.
    values = widget_values({"learning_rate": 1e-9})
    assert values["cfg.learning_rate"] == FIELDS["learning_rate"].min


@pytest.mark.parametrize("text", ["", "8, x", "1.5"])
def test_filters_that_are_not_whole_numbers_name_the_field(text: str) -> None:
    values = widget_values({})
    values["cfg.filters"] = text
    with pytest.raises(FormError) as caught:
        build_config(values)
    assert caught.value.field == "filters"


def test_filters_accept_spaces_or_commas() -> None:
    values = widget_values({})
    values["cfg.filters"] = " 8 16,32 ,"
    assert build_config(values)["filters"] == [8, 16, 32]


def test_a_422_lands_on_the_field_it_names() -> None:
    found = errors_by_field(
        {
            "config.batch_size": "Input should be greater than or equal to 1",
            "config.image_size.0": "Input should be a valid integer",
            "config.augment.zoom": "Input should be less than or equal to 0.5",
            "config": "filters: 6 pooling blocks shrink a 16-pixel side below 1 pixel",
            "dataset_id": "String should have at most 64 characters",
            "config.nonsense": "Extra inputs are not permitted",
        }
    )
    assert found["batch_size"].startswith("Input should be greater")
    assert found["image_size"] == "Input should be a valid integer"
    assert found["augment.zoom"].endswith("0.5")
    assert found["filters"].startswith("filters: 6 pooling blocks")
    assert "dataset_id" in found
    assert found[""] == "Extra inputs are not permitted"  # no field to put it beside


def test_a_model_level_message_names_its_field_at_the_start() -> None:
    errors = {"config": "image_size[1] must be between 4 and 1024, got 2"}
    assert field_error(errors, "image_size") == errors["config"]
    assert field_error(errors, "filters") is None


def test_the_architectures_mirror_trainconfigs() -> None:
    assert FIELDS["architecture"].options == get_args(Architecture)
    assert architectures.APPLICATIONS == APPLICATIONS
    assert architectures.CONV_BN_ONLY == CONV_BN_ONLY
    assert set(CONV_BN_ONLY) < set(FIELDS)


@pytest.mark.parametrize("name", APPLICATIONS)
def test_an_application_sends_the_conv_bn_knobs_unchanged(name: str) -> None:
    # Started from a preset of other knobs: hidden for an application, never sent changed.
    values = widget_values(PRESETS["tiny"][1].model_dump(mode="json"))
    values["cfg.architecture"] = name
    config = build_config(values)
    defaults = TrainConfig()
    assert config["architecture"] == name
    assert {k: config[k] for k in CONV_BN_ONLY} == {k: getattr(defaults, k) for k in CONV_BN_ONLY}
    assert config["bn_momentum"] == 0.9 and config["image_size"] == [32, 32]  # the rest stays
    TrainConfig.model_validate(config)


def test_only_the_knobs_an_application_uses_are_shown() -> None:
    network = GROUPS["Network"]
    assert shown_fields(network, "conv_bn") == network
    shown = [f.name for f in shown_fields(network, "resnet50")]
    assert shown == ["architecture", "bn_momentum", "dropout"]


def test_an_applications_smallest_image_lands_on_image_size() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(architecture="resnet50", image_size=(16, 16))
    (error,) = caught.value.errors()
    message = str(error["msg"]).removeprefix("Value error, ")
    assert field_error({"config": message}, "image_size") == message
    assert str(APPLICATION_MIN_SIDE) in message
