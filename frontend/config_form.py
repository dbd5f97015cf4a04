"""The New-run form's fields: TrainConfig mirrored for widgets, in four groups.

The frontend never imports backend (DESIGN.md), so each field's bounds, default
and one-line help live here too; tests/frontend/test_config_form.py fails when
they drift from backend/train_config.py. Everything here is plain data and
functions: the page draws widgets from it, tests call it directly.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Literal

from frontend.architectures import APPLICATIONS, ARCHITECTURES, CONV_BN_ONLY, DEFAULT

Kind = Literal["int", "float", "bool", "choice", "size", "int_list", "optional_int"]


@dataclass(frozen=True)
class FormField:
    name: str  # TrainConfig's field; "augment.flip" for a nested one
    label: str
    help: str
    kind: Kind
    default: Any
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()


F = FormField
# fmt: off
GROUPS: dict[str, tuple[FormField, ...]] = {
    "Data": (
        F("image_size", "Image size (height × width)", "Images are resized to this, in pixels.",
          "size", (50, 55), 4, 1024),
        F("color_mode", "Colour mode", "Grayscale feeds one channel, RGB three.",
          "choice", "rgb", options=("rgb", "grayscale")),
        F("validation_split", "Validation split", "Share of each class held out for validation.",
          "float", 0.2, 0.01, 0.99, 0.05),
        F("seed", "Seed", "Fixes the split, the shuffling and the initial weights.",
          "int", 42, 0, 2**31 - 1),
        F("augment.flip", "Random flips", "Flip training images horizontally at random.",
          "bool", False),
        F("augment.rotate", "Rotation", "Random rotation, up to this fraction of a full turn.",
          "float", 0.0, 0.0, 0.5, 0.05),
        F("augment.zoom", "Zoom", "Random zoom in or out, up to this fraction.",
          "float", 0.0, 0.0, 0.5, 0.05),
    ),
    "Network": (
        F("architecture", "Architecture", "The network to train: the Conv+BN blocks below, or "
          "a Keras Application with random weights.", "choice", DEFAULT,
          options=tuple(ARCHITECTURES)),
        F("filters", "Filters per block", "Comma-separated, one number per block (1–8 blocks); "
          "each block ends in a 2×2 max-pool.", "int_list", [64, 128, 256, 512], 1, 2048),
        F("convs_per_block", "Convs", "Convolution layers in each block, before its pool.",
          "int", 2, 1, 4),
        F("kernel_size", "Kernel", "Side of each square convolution kernel, in pixels.",
          "int", 3, 1, 11),
        F("batch_norm", "BatchNorm", "BatchNormalization after every convolution.",
          "bool", True),
        F("bn_momentum", "BatchNorm momentum", "Closer to 1: moving statistics adapt "
          "more slowly, and validation lags training longer.", "float", 0.99, 0.0, 0.9999, 0.01),
        F("dropout", "Dropout", "Dropout rate after each block and the dense layer.",
          "float", 0.0, 0.0, 0.99, 0.05),
        F("dense_units", "Dense units", "Width of the dense layer before the classifier.",
          "int", 512, 1, 8192),
    ),
    "Optimizer": (
        F("optimizer", "Optimizer", "The update rule.", "choice", "adam",
          options=("adam", "sgd", "rmsprop")),
        F("learning_rate", "Learning rate", "Step size of each update.",
          "float", 1e-3, 1e-7, 10.0, 1e-4),
        F("momentum", "Momentum (SGD)", "SGD only: how much of the last update carries on.",
          "float", 0.9, 0.0, 0.9999, 0.05),
    ),
    "Schedule": (
        F("batch_size", "Batch size", "Images per training step.", "int", 128, 1, 8192),
        F("epochs", "Epochs", "Passes over the training images.", "int", 20, 1, 1000),
        F("early_stopping_patience", "Early-stopping patience", "Stop after this many epochs "
          "without a better val_loss; 0 = off.", "optional_int", None, 0, 1000),
        F("batch_metrics_every", "Batch loss every … steps", "How often the batch loss is "
          "streamed, in steps.", "int", 10, 1, 100_000),
        F("mixed_precision", "Mixed precision", "float16 compute, float32 weights: faster "
          "on GPUs with tensor cores, slower on CPUs.", "bool", False),
        F("jit_compile", "XLA compile", "Compile the training step with XLA: often faster "
          "on a GPU, after a slower first epoch.", "bool", False),
        F("gap_probes", "Measure the gap", "Each epoch, also measure what val_loss − loss "
          "is made of (train-mode effect, BatchNorm lag).", "bool", True),
    ),
}
# fmt: on
FIELDS: dict[str, FormField] = {f.name: f for group in GROUPS.values() for f in group}


class FormError(ValueError):
    """A widget value the form itself can tell is wrong, named by its field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def widget_keys(field: FormField) -> list[str]:
    """Session-state keys of a field's widgets (image_size has two)."""
    if field.kind == "size":
        return [f"cfg.{field.name}.0", f"cfg.{field.name}.1"]
    return [f"cfg.{field.name}"]


def widget_values(config: dict[str, Any]) -> dict[str, Any]:
    """Initial widget values (by session-state key) from a run's or preset's config;
    a field the config lacks takes the form's default."""
    values: dict[str, Any] = {}
    for field in FIELDS.values():
        value = _lookup(config, field.name, field.default)
        keys = widget_keys(field)
        if field.kind == "size":
            values[keys[0]], values[keys[1]] = (_clamp(field, int(side)) for side in value[:2])
        elif field.kind == "int_list":
            values[keys[0]] = ", ".join(str(int(v)) for v in value)
        elif field.kind in ("int", "optional_int"):
            values[keys[0]] = _clamp(field, int(value or 0))
        elif field.kind == "float":
            values[keys[0]] = _clamp(field, float(value))
        else:
            values[keys[0]] = value
    return values


def build_config(values: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig JSON for the API from widget values (by session-state key).

    Raises :class:`FormError` for what the widgets cannot refuse (filters text);
    everything else is the API's to judge, so its 422 names the field."""
    config: dict[str, Any] = {}
    for field in FIELDS.values():
        keys = widget_keys(field)
        value: Any = values[keys[0]]
        if field.kind == "size":
            value = [int(values[keys[0]]), int(values[keys[1]])]
        elif field.kind == "int_list":
            value = parse_int_list(field.name, str(value))
        elif field.kind == "optional_int":
            value = int(value) or None  # 0 switches it off
        parent, _, child = field.name.partition(".")
        if child:
            config.setdefault(parent, {})[child] = value
        else:
            config[parent] = value
    if config["architecture"] in APPLICATIONS:
        # Hidden for an application: whatever a preset or clone left in them is sent as
        # the default, so a config never records a change that trains nothing.
        config.update({name: copy.deepcopy(FIELDS[name].default) for name in CONV_BN_ONLY})
    return config


def shown_fields(fields: tuple[FormField, ...], architecture: str) -> tuple[FormField, ...]:
    """The fields of a group that mean something for ``architecture``."""
    if architecture not in APPLICATIONS:
        return fields
    return tuple(f for f in fields if f.name not in CONV_BN_ONLY)


def parse_int_list(name: str, text: str) -> list[int]:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        raise FormError(name, "give at least one number, e.g. 32, 64")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise FormError(name, f"whole numbers separated by commas, not {text!r}") from None


def errors_by_field(field_errors: dict[str, str]) -> dict[str, str]:
    """A 422's messages keyed by the form field each names ("" for the rest).

    Keys look like ``config.batch_size``, ``config.image_size.0`` or ``config``
    for a model-level error, whose message starts with the field it is about
    ("filters: 5 pooling blocks ...", "image_size[0] must be ...")."""
    found: dict[str, list[str]] = {}
    for loc, message in field_errors.items():
        parts = loc.split(".")
        if parts[0] == "config" and len(parts) == 1:
            start = re.match(r"[a-z_]+(\.[a-z_]+)?", message)
            name = start.group(0) if start else ""
            name = name if name in FIELDS else name.split(".")[0]
        elif parts[0] == "config":
            nested = ".".join(parts[1:3])
            name = nested if nested in FIELDS else parts[1]
        else:
            name = parts[0]  # dataset_id, name
        known = name in FIELDS or name in ("dataset_id", "name")
        found.setdefault(name if known else "", []).append(message)
    return {name: "; ".join(messages) for name, messages in found.items()}


def field_error(field_errors: dict[str, str], name: str) -> str | None:
    """The message for one form field from ``ApiError.field_errors()``, if any."""
    return errors_by_field(field_errors).get(name)


def _clamp(field: FormField, value: Any) -> Any:
    """Into the widget's range: a number input refuses a value outside it, and
    the range mirrors the API's, so only an odd stored config is ever moved."""
    low = field.min if field.min is not None else value
    high = field.max if field.max is not None else value
    return type(value)(min(max(value, low), high))


def _lookup(config: dict[str, Any], dotted: str, default: Any) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return default
        value = value[part]
    return value
