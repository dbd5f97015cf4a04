"""Request and response models of sweeps (POST/GET /api/sweeps): one home for
the shapes that scripts rely on. What they mean is backend/sweeps.py's."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from backend.api.schemas import RunStatus
from backend.plain_text import PlainText
from backend.train_config import TrainConfig

SweepMethod = Literal["grid", "random", "tpe", "list"]
SweepStatus = Literal["running", "finished", "cancelled", "failed"]
Pruner = Literal["median", "halving"]
Direction = Literal["minimize", "maximize"]

MAX_KNOBS = 20
MAX_VALUES = 100
MAX_RUNS = 1000


class Range(BaseModel):
    """A continuous (or, for an integer knob, whole-number) range to sample."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = Field(default=False, description="Sample evenly on a log scale (low > 0).")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


def _knob_kind(value: Any) -> str:
    return "list" if isinstance(value, list) else "range"


# Told apart by shape, so that a bad range's 422 names only the range's problem
# (a plain union would add "Input should be a valid list" to it).
Knob = Annotated[
    Annotated[list[Any], Tag("list")] | Annotated[Range, Tag("range")],
    Discriminator(_knob_kind),
]


class Variant(BaseModel):
    """One config of a "list" sweep: a patch of the base config, and its label."""

    model_config = ConfigDict(extra="forbid")

    label: PlainText = Field(max_length=200)
    patch: dict[str, Any] = Field(default_factory=dict)


class SweepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(max_length=64)
    config: TrainConfig = Field(default_factory=TrainConfig, description="The base TrainConfig.")
    space: dict[str, Knob] = Field(
        default_factory=dict,
        max_length=MAX_KNOBS,
        description="TrainConfig field (dotted for nested ones: augment.flip) -> a list of "
        "values, or a range {low, high, log}.",
    )
    variants: list[Variant] | None = Field(
        default=None,
        max_length=MAX_RUNS,
        description='method "list" only: the config patches to run, in order.',
    )
    method: SweepMethod = Field(
        default="tpe",
        description="grid: every combination of the lists, in the order given; random; "
        "tpe: Optuna's model-based sampler; list: the `variants`, in order.",
    )
    max_runs: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RUNS,
        description="The budget. Default: every combination (grid) or variant (list); 10 else.",
    )
    parallel: int = Field(default=2, ge=1, le=64, description="How many train at once.")
    metric: str = Field(
        default="val_loss",
        max_length=64,
        pattern=r"^[A-Za-z0-9_.]+$",
        description="The epoch metric whose best value ranks the runs.",
    )
    direction: Direction | None = Field(
        default=None,
        description="Default: maximize for an accuracy, minimize for anything else.",
    )
    prune: Pruner | None = Field(
        default=None,
        description="Stop hopeless runs early on the epoch metric: Optuna's median or "
        "successive-halving pruner. A pruned run ends with status pruned and the reason.",
    )
    prune_startup_runs: int = Field(
        default=2, ge=0, le=100, description="Runs that finish before any is pruned."
    )
    prune_warmup_epochs: int = Field(
        default=1, ge=0, le=1000, description="Epochs of each run before it may be pruned."
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="The sampler's seed.")
    name: PlainText | None = Field(default=None, max_length=200)


class SweepRun(BaseModel):
    id: str
    name: str
    status: RunStatus
    trial_number: int | None
    label: str | None = Field(default=None, description='A "list" sweep\'s variant label.')
    params: dict[str, Any] = Field(description="The knobs' values this run tried.")
    config: dict[str, Any]
    value: float | None = Field(description="The best value of the sweep's metric.")
    best_val_loss: float | None
    best_val_loss_epoch: int | None
    best_val_accuracy: float | None
    best_val_accuracy_epoch: int | None
    epochs_done: int
    duration_s: float | None
    error: str | None


class SweepPublic(BaseModel):
    id: str
    name: str
    status: SweepStatus
    dataset_id: str | None
    config: dict[str, Any]
    space: dict[str, Any]
    variants: list[Variant] | None
    method: SweepMethod
    max_runs: int
    parallel: int
    metric: str
    direction: Direction
    prune: Pruner | None
    options: dict[str, Any]
    error: str | None
    source_run_id: str | None
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = Field(description="Its runs by status.")
    best_run_id: str | None
    runs: list[SweepRun] = Field(
        default_factory=list, description="Best first; runs without a value last."
    )
