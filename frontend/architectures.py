"""The networks a run can train (TrainConfig.architecture), as the UI speaks
of them: a label and one line per choice, and which knobs mean something for
which network.

The frontend never imports backend (DESIGN.md), so the names mirror
backend/train_config.py; tests/frontend/test_config_form.py fails when they drift.
"""

from __future__ import annotations

from typing import Any

DEFAULT = "conv_bn"
# name → (label in the select, the line shown under it)
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "conv_bn": (
        "Conv+BN blocks (conv_bn)",
        "The question's network: Conv+BN blocks built from the Network knobs "
        "(filters, convs, kernel, BatchNorm, dense units).",
    ),
    "mobilenet_v3_small": (
        "MobileNetV3Small",
        "Keras MobileNetV3Small with random weights at the image size, its head "
        "sized to the dataset's classes.",
    ),
    "resnet50": (
        "ResNet50",
        "Keras ResNet50 with random weights at the image size, its head sized to "
        "the dataset's classes.",
    ),
    "efficientnet_b0": (
        "EfficientNetB0",
        "Keras EfficientNetB0 with random weights at the image size, its head sized "
        "to the dataset's classes.",
    ),
}
APPLICATIONS = tuple(name for name in ARCHITECTURES if name != DEFAULT)
# The knobs only the Conv+BN family uses: an application has its own layers.
CONV_BN_ONLY = ("filters", "convs_per_block", "kernel_size", "batch_norm", "dense_units")


def label(name: str) -> str:
    return ARCHITECTURES.get(name, (name, ""))[0]


def description(name: str) -> str:
    return ARCHITECTURES.get(name, ("", ""))[1]


def is_application(config: dict[str, Any]) -> bool:
    """Whether ``config`` (nested or flattened) trains a Keras Application; a
    config stored before the choice existed trains the Conv+BN family."""
    return config.get("architecture") in APPLICATIONS


def without_unused(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened config less the knobs its network does not use: an
    application run's filters or dense units mean nothing, so no table shows them."""
    if not is_application(flat):
        return flat
    return {field: value for field, value in flat.items() if field not in CONV_BN_ONLY}
