"""Request and response models of the public REST contract."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from backend.train_config import TrainConfig, read_stored_config


def _no_control_characters(value: str) -> str:
    # A name is one line of text; a NUL would also make PostgreSQL refuse it,
    # and a lone surrogate (JSON allows "\ud800") cannot be stored at all.
    if any(unicodedata.category(char) in {"Cc", "Cs"} for char in value):
        raise ValueError("must be printable text, without control characters")
    return value


PlainText = Annotated[str, AfterValidator(_no_control_characters)]
"""A user-chosen name: any printable text."""


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    redis: bool
    database: bool
    workers: int


class ClassCount(BaseModel):
    name: str
    count: int


class ImageShape(BaseModel):
    height: int
    width: int
    mode: str
    count: int


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    created_at: datetime
    num_images: int
    classes: list[ClassCount]
    image_shapes: list[ImageShape]
    warnings: list[str]


class ClassSamples(BaseModel):
    name: str
    count: int
    images: list[str] = Field(description="PNG thumbnails as data: URLs.")


class Preset(BaseModel):
    name: str
    description: str
    config: TrainConfig


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(max_length=64)
    config: TrainConfig = Field(default_factory=TrainConfig)
    name: PlainText | None = Field(default=None, max_length=200)


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    dataset_id: str | None
    class_names: list[str]
    config: TrainConfig = Field(
        description="The config the run trains with: the stored one, read tolerantly "
        "(a field stored by no version takes its default)."
    )
    config_unknown: dict[str, Any] = Field(
        default_factory=dict,
        description="Stored config fields this version does not know (removed or renamed "
        "since the run was made): kept, not used.",
    )
    config_notes: list[str] = Field(
        default_factory=list,
        description="Stored config values that no longer validate, each replaced by its default.",
    )
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    epochs_done: int
    error: str | None
    resumed_at_epoch: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @model_validator(mode="before")
    @classmethod
    def _read_stored_config(cls, data: Any) -> Any:
        """A Run row's config as stored by whichever version made it, never a 500."""
        if isinstance(data, dict):
            if "config_unknown" in data or "config_notes" in data:
                return data  # already read (a client parsing a response)
            fields = dict(data)
        else:
            fields = {name: getattr(data, name) for name in cls.model_fields if hasattr(data, name)}
        stored = read_stored_config(fields.get("config"))
        fields.update(config=stored.config, config_unknown=stored.unknown)
        fields["config_notes"] = stored.notes
        return fields


class Metrics(BaseModel):
    epochs: list[dict[str, Any]] = Field(description="One row per finished epoch, 1-based.")
    batches: list[dict[str, Any]] = Field(
        description="Training loss at fractional epochs, as recorded: every point, or at most "
        "`max_points` of them when the run has more (of equal step ranges, the points of "
        "lowest and highest loss, and the first and last point). The full series: "
        "GET /api/runs/{id}/metrics/batches.csv."
    )
    batches_total: int = Field(description="Batch points the run has recorded.")
    downsampled: bool = Field(
        description="True when `batches` is a selection of the `batches_total` points."
    )


class Finding(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str = Field(description="batchnorm_lag, overfitting, lr_too_high, ...")
    severity: Literal["info", "warning", "critical"]
    title: str
    evidence: str = Field(description="What the run's own numbers show.")
    suggestion: dict[str, Any] = Field(
        description="A TrainConfig patch for a cloned run; empty when no knob fixes it."
    )


class GapParts(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int
    gap: float | None = Field(description="val_loss − loss.")
    train_mode: float | None = Field(
        description="train_eval_loss_recalibrated − loss (train_eval_loss without BatchNorm)."
    )
    bn_lag: float | None = Field(description="val_loss − val_loss_recalibrated.")
    generalisation: float | None = Field(description="The rest of the gap.")


class Diagnosis(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    run_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    epochs: int = Field(description="Epochs recorded so far.")
    findings: list[Finding] = Field(description="Most severe first.")
    decomposition: list[GapParts] = Field(description="The gap of each epoch, in parts.")
