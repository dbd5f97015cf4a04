"""Request and response models of the public REST contract."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from backend.fit_summary import FitSummary
from backend.plain_text import PlainText
from backend.train_config import TrainConfig, read_stored_config

__all__ = ["PlainText"]  # re-exported: its home is backend.plain_text

RunStatus = Literal[
    "queued", "running", "succeeded", "failed", "cancelled", "interrupted", "pruned"
]
RunSource = Literal["worker", "keras"]


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
    source: RunSource = Field(
        default="worker",
        description="worker: trained here from a TrainConfig; keras: a user's own model.fit "
        "with curvelab.Callback, sent over REST (an external run).",
    )
    host: str | None = Field(default=None, description="The machine an external run trains on.")
    config: TrainConfig | None = Field(
        description="The config the run trains with: the stored one, read tolerantly "
        "(a field stored by no version takes its default). None for an external run: "
        "see `summary`."
    )
    summary: FitSummary | None = Field(
        default=None,
        description="An external run's model and fit settings, as its client sent them.",
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
    status: RunStatus
    epochs_done: int = Field(description="The last epoch recorded (1-based; 0: none yet).")
    error: str | None = Field(
        description="Why it failed, or (status pruned) why its sweep's pruner stopped it."
    )
    resumed_at_epoch: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    tags: list[str] = Field(default_factory=list)
    notes: str = ""
    sweep_id: str | None = Field(default=None, description="The sweep that made the run.")
    trial_number: int | None = Field(default=None, description="Its trial in that sweep.")
    best_val_loss: float | None = None
    best_val_loss_epoch: int | None = None
    best_val_accuracy: float | None = None
    best_val_accuracy_epoch: int | None = None
    duration_s: float | None = Field(
        default=None, description="Training seconds of the recorded epochs."
    )
    images_per_sec: float | None = Field(
        default=None, description="Training images per second, the epochs' mean."
    )

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
        fields["notes"] = fields.get("notes") or ""
        if fields.get("source") == "keras":
            # An external run has no TrainConfig (SQL holds {}); its summary
            # was validated when it came, and is read back as tolerantly.
            fields.update(config=None, config_unknown={}, config_notes=[])
            fields["summary"] = _stored_summary(fields.get("summary"))
            return fields
        stored = read_stored_config(fields.get("config"))
        fields.update(config=stored.config, config_unknown=stored.unknown)
        fields["config_notes"] = stored.notes
        return fields


RunSort = Literal[
    "created",
    "-created",
    "best_val_loss",
    "-best_val_loss",
    "best_val_accuracy",
    "-best_val_accuracy",
    "duration",
    "-duration",
    "name",
    "-name",
]


class RunPage(BaseModel):
    items: list[RunPublic]
    total: int = Field(description="Runs that match the filters, on every page.")
    next: str | None = Field(
        description="The cursor of the next page (pass it as `cursor`); null on the last."
    )


Tag = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f,]+$"
    ),
]


def _no_nul(value: str) -> str:
    # Notes are lines of any text; a NUL is the one character PostgreSQL cannot store.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Notes = Annotated[str, AfterValidator(_no_nul)]


class RunPatch(BaseModel):
    """What PATCH /api/runs/{id} changes; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    name: PlainText | None = Field(default=None, min_length=1, max_length=200)
    tags: list[Tag] | None = Field(
        default=None, max_length=50, description="Replaces the run's tags (no commas)."
    )
    notes: Notes | None = Field(default=None, max_length=20_000)


class RunsDelete(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(min_length=1, max_length=1000)


class RunsDeleted(BaseModel):
    deleted: list[str] = Field(
        description="Runs deleted (a queued or running one cancelled first)."
    )
    missing: list[str] = Field(description="Ids no run has (already deleted?).")


class RunRef(BaseModel):
    """A run as a conflict lists it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: RunStatus


class DatasetInUse(BaseModel):
    """The 409 body of deleting a dataset that has runs."""

    detail: str
    total: int = Field(description="The dataset's runs; `runs` lists the newest 100.")
    runs: list[RunRef]


def _stored_summary(raw: Any) -> FitSummary | None:
    """A stored summary as this version reads it; None, never a 500, when a
    later version's no longer validates here."""
    if raw is None or isinstance(raw, FitSummary):
        return raw
    try:
        return FitSummary.model_validate(raw)
    except ValidationError:
        return None


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
    keras_code: str | None = Field(
        default=None,
        description="The same change as code in a Keras script, e.g. "
        "keras.layers.BatchNormalization(momentum=0.9); None when there is none.",
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
    status: RunStatus
    epochs: int = Field(description="Epochs recorded so far.")
    findings: list[Finding] = Field(description="Most severe first.")
    decomposition: list[GapParts] = Field(description="The gap of each epoch, in parts.")
