"""TrainConfig: the question's network by default, and refusals that name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.train_config import PRESETS, TrainConfig


def test_defaults_are_the_questions_network() -> None:
    config = TrainConfig()
    assert config.image_size == (50, 55)
    assert config.filters == [64, 128, 256, 512]
    assert config.convs_per_block == 2
    assert config.batch_norm and config.bn_momentum == 0.99
    assert config.batch_size == 128 and config.optimizer == "adam"
    assert config.channels == 3


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "adagrad"}, "optimizer"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"validation_split": 0}, "validation_split"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 100_000}, "epochs"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"color_mode": "cmyk"}, "color_mode"),
        ({"unknown_knob": 1}, "unknown_knob"),
    ],
)
def test_bad_fields_are_refused_by_name(patch: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate(patch)
    assert field in str(info.value)


def test_pooling_below_one_pixel_is_refused() -> None:
    # 16 px, 5 blocks: 16 → 8 → 4 → 2 → 1 → 0.
    with pytest.raises(ValidationError, match=r"filters: 5 pooling blocks .* at most 4 blocks"):
        TrainConfig(image_size=(16, 16), filters=[4, 4, 4, 4, 4])
    assert TrainConfig(image_size=(16, 16), filters=[4, 4, 4, 4]).filters == [4, 4, 4, 4]


@pytest.mark.parametrize("architecture", ["mobilenet_v3_small", "resnet50", "efficientnet_b0"])
def test_an_application_refuses_images_below_32_pixels(architecture: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig(architecture=architecture, image_size=(16, 16))
    assert (
        f"image_size: {architecture} needs at least 32×32 pixels, got 16×16; use a larger "
        "image_size (images are resized to it)"
    ) in str(info.value)
    # conv_bn's filters do not apply to it: 32 px with 6 blocks is not refused.
    config = TrainConfig(architecture=architecture, image_size=(32, 40), filters=[4] * 6)
    assert config.architecture == architecture


@pytest.mark.parametrize(
    ("size", "message"), [((0, 16), "image_size[0]"), ((16, 5000), "image_size[1]")]
)
def test_absurd_image_sizes_are_refused(size: tuple[int, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[")):
        TrainConfig(image_size=size, filters=[4])


def test_presets_are_valid_and_include_the_seed_network() -> None:
    assert PRESETS["seed-cnn"][1] == TrainConfig()
    for _description, config in PRESETS.values():
        TrainConfig.model_validate(config.model_dump())
