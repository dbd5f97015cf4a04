"""TrainConfig: every knob of a training run, with bounds.

The defaults are the network of the question that started curvelab: four
Conv+BN, Conv+BN, MaxPool blocks (64..512 filters) on 50×55 RGB images,
Dense(512), Adam, batch 128. One home for this contract: the API validates
with it, the worker builds from it, presets are instances of it.

A config stored by an earlier version is read back with
:func:`read_stored_config`, never with ``TrainConfig.model_validate``: the
fields change between versions, and an old run must still list, compare and
resume.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Augment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flip: bool = Field(default=False, description="Random horizontal flips.")
    rotate: float = Field(
        default=0.0, ge=0.0, le=0.5, description="Random rotation, as a fraction of a full turn."
    )
    zoom: float = Field(default=0.0, ge=0.0, le=0.5, description="Random zoom, ± this fraction.")


# The networks the worker builds (worker/training/architectures.py): the
# question's Conv+BN family, and Keras Applications built with random weights
# at the dataset's image size and class count.
Architecture = Literal["conv_bn", "mobilenet_v3_small", "resnet50", "efficientnet_b0"]
APPLICATIONS: tuple[str, ...] = ("mobilenet_v3_small", "resnet50", "efficientnet_b0")
# The knobs of the Conv+BN family only: an application has its own layers.
CONV_BN_ONLY = ("filters", "convs_per_block", "kernel_size", "batch_norm", "dense_units")
# Keras Applications need at least this side (their strides reach 1×1 there).
APPLICATION_MIN_SIDE = 32


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    architecture: Architecture = Field(
        default="conv_bn",
        description="conv_bn: the Conv+BN blocks below (filters, convs_per_block, "
        "kernel_size, batch_norm, dense_units); mobilenet_v3_small, resnet50, "
        "efficientnet_b0: that Keras Application with random weights at image_size, its "
        "classifier head sized to the dataset's classes. bn_momentum applies to every "
        "BatchNormalization layer and dropout to the head, whichever the network.",
    )

    # data
    image_size: tuple[int, int] = Field(
        default=(50, 55), description="Images are resized to [height, width]."
    )
    color_mode: Literal["rgb", "grayscale"] = Field(default="rgb")
    validation_split: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Share of each class held out for validation."
    )
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Split, shuffle and init seed.")
    augment: Augment = Field(default_factory=Augment)
    # network
    filters: list[int] = Field(
        default=[64, 128, 256, 512],
        min_length=1,
        max_length=8,
        description="Filters of each block's convolutions; each block ends in a 2×2 max-pool.",
    )
    convs_per_block: int = Field(default=2, ge=1, le=4)
    kernel_size: int = Field(default=3, ge=1, le=11)
    batch_norm: bool = Field(default=True, description="BatchNormalization after every conv.")
    bn_momentum: float = Field(default=0.99, ge=0.0, lt=1.0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="After each block and dense.")
    dense_units: int = Field(default=512, ge=1, le=8192)
    # optimizer
    optimizer: Literal["adam", "sgd", "rmsprop"] = Field(default="adam")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="SGD only.")
    # schedule
    batch_size: int = Field(default=128, ge=1, le=8192)
    epochs: int = Field(default=20, ge=1, le=1000)
    early_stopping_patience: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Stop after this many epochs without a better val_loss.",
    )
    batch_metrics_every: int = Field(
        default=10, ge=1, le=100_000, description="Stream the batch loss every this many steps."
    )
    # speed
    mixed_precision: bool = Field(
        default=False,
        description="Compute in float16 with float32 weights (Keras mixed_float16): faster on "
        "GPUs with tensor cores, slower on CPUs. The output layer stays float32.",
    )
    jit_compile: bool = Field(
        default=False,
        description="Compile the training step with XLA: often faster on a GPU, after a "
        "slower first epoch.",
    )
    # measurement
    gap_probes: bool = Field(
        default=True,
        description="At each epoch end, also measure what the gap between val_loss and loss "
        "is made of: a training sample evaluated like validation, validation with BatchNorm "
        "statistics re-estimated, and the BatchNorm moving averages' initial-value weight.",
    )

    @model_validator(mode="after")
    def _fits_the_image(self) -> TrainConfig:
        for i, side in enumerate(self.image_size):
            if not 4 <= side <= 1024:
                raise ValueError(f"image_size[{i}] must be between 4 and 1024, got {side}")
        for i, count in enumerate(self.filters):
            if not 1 <= count <= 2048:
                raise ValueError(f"filters[{i}] must be between 1 and 2048, got {count}")
        smallest = min(self.image_size)
        if self.architecture != "conv_bn":
            if smallest < APPLICATION_MIN_SIDE:
                raise ValueError(
                    f"image_size: {self.architecture} needs at least "
                    f"{APPLICATION_MIN_SIDE}×{APPLICATION_MIN_SIDE} pixels, got "
                    f"{self.image_size[0]}×{self.image_size[1]}; use a larger image_size "
                    "(images are resized to it)"
                )
            return self
        # Each block halves height and width (floor); below 1×1 there is nothing to pool.
        if smallest >> len(self.filters) < 1:
            raise ValueError(
                f"filters: {len(self.filters)} pooling blocks shrink a {smallest}-pixel side "
                f"below 1 pixel; use at most {smallest.bit_length() - 1} blocks "
                "or a larger image_size"
            )
        return self

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1


PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "seed-cnn": (
        "The question's network: 4 × (Conv+BN, Conv+BN, MaxPool), Dense 512, Adam 1e-3, batch 128.",
        TrainConfig(),
    ),
    "seed-cnn-small": (
        "The same shape, narrow enough for a CPU: filters 8–64, Dense 64.",
        TrainConfig(filters=[8, 16, 32, 64], dense_units=64, epochs=6),
    ),
    "tiny": (
        "Two small blocks on 32×32 images: curves within a minute on a laptop CPU. "
        "BatchNorm momentum 0.9, so its statistics keep up with few steps per epoch.",
        TrainConfig(
            image_size=(32, 32),
            color_mode="grayscale",
            filters=[8, 16],
            convs_per_block=1,
            dense_units=32,
            bn_momentum=0.9,
            batch_size=16,
            epochs=10,
            batch_metrics_every=2,
        ),
    ),
}


@dataclass(frozen=True)
class StoredConfig:
    """A stored config as this version reads it.

    ``config``: what a run of it trains with (the effective config).
    ``unknown``: stored fields this version does not know (removed or renamed
    since), nested as stored; SQL keeps them, nothing uses them.
    ``notes``: one line per stored value that no longer validates and was
    replaced by its default."""

    config: TrainConfig
    unknown: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_stored_config(raw: Any) -> StoredConfig:
    """Read a run's stored config tolerantly: a missing field takes its
    default, an unknown one is set aside in ``unknown``, a value out of this
    version's bounds takes its default with a note. Never raises."""
    if isinstance(raw, TrainConfig):
        return StoredConfig(raw)
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        return StoredConfig(
            TrainConfig(),
            {},
            [f"the stored config is a {kind}, not an object: every field takes its default"],
        )
    try:
        return StoredConfig(TrainConfig.model_validate(raw))
    except ValidationError:
        pass
    known, unknown = _split_known(raw, TrainConfig)
    dropped: list[tuple[str, Any, str]] = []
    # Each round drops at least one stored value, so this ends.
    while True:
        try:
            config = TrainConfig.model_validate(known)
            break
        except ValidationError as exc:
            found = [d for error in exc.errors() for d in _drop(known, error)]
            if not found:  # nothing left to blame: start from the defaults
                found = [(name, value, "not readable") for name, value in known.items()]
                known = {}
            dropped += found
    notes = [
        f"{name}: the stored value {_short(value)} is no longer valid ({why}); "
        f"it takes the default {_short(_dotted(config, name))}"
        for name, value, why in dropped
    ]
    return StoredConfig(config, unknown, notes)


def _split_known(raw: dict[str, Any], model: type[BaseModel]) -> tuple[dict[str, Any], dict]:
    """(the fields ``model`` knows, the rest), recursing into nested models."""
    known: dict[str, Any] = {}
    unknown: dict[str, Any] = {}
    for key, value in raw.items():
        info = model.model_fields.get(key)
        if info is None:
            unknown[key] = value
            continue
        nested = info.annotation
        if isinstance(value, dict) and isinstance(nested, type) and issubclass(nested, BaseModel):
            known[key], inner = _split_known(value, nested)
            if inner:
                unknown[key] = inner
        else:
            known[key] = value
    return known, unknown


def _drop(known: dict[str, Any], error: Any) -> list[tuple[str, Any, str]]:
    """Remove the stored value an error is about: (dotted name, value, why)."""
    why = str(error["msg"]).removeprefix("Value error, ")
    location = tuple(error["loc"])
    if not location:
        # A check across fields (TrainConfig._fits_the_image): its message names them.
        names = [k for k in known if re.search(rf"\b{re.escape(k)}\b", why)]
        return [(name, known.pop(name), why) for name in names]
    node, path = known, []
    for part in location:
        if not isinstance(node, dict) or part not in node:
            break
        path.append(str(part))
        if not isinstance(node[part], dict) or len(path) == len(location):
            return [(".".join(path), node.pop(part), why)]
        node = node[part]
    return []


def _dotted(config: BaseModel, name: str) -> Any:
    value: Any = config
    for part in name.split("."):
        value = getattr(value, part, None)
    return value.model_dump() if isinstance(value, BaseModel) else value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
