"""What an external run (a user's own ``model.fit`` with ``curvelab.Callback``)
tells the server: the REST bodies of the external-run routes.

The client package (``client/curvelab``) builds these as plain dicts (it
never imports the server); tests/client/test_contract.py checks that what it
builds validates here. Newer clients may add keys: every model keeps what it
does not know (``extra="allow"``) instead of refusing it, and the whole body
stays under the JSON cap of ``backend.api.body_limit``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.plain_text import PlainText

MAX_LAYERS = 5000
MAX_VALUES = 500  # metric values of one epoch or batch point
MAX_EPOCHS_PER_CALL = 1000
MAX_BATCHES_PER_CALL = 20_000
Number = float | None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class LayerSummary(_Open):
    name: str = Field(max_length=300)
    type: str = Field(max_length=200, description="The layer's class, e.g. BatchNormalization.")
    output_shape: Any = Field(default=None, description="As Keras gives it; None: unknown.")
    params: int = Field(default=0, ge=0)
    trainable_params: int = Field(default=0, ge=0)
    trainable: bool = True
    # Inside a nested model (a Sequential in a functional one): its path.
    parent: str | None = Field(default=None, max_length=300)
    momentum: float | None = Field(default=None, description="BatchNormalization only.")
    rate: float | None = Field(default=None, description="Dropout layers only.")
    units: int | None = None
    filters: int | None = None
    activation: str | None = Field(default=None, max_length=100)


class ModelSummary(_Open):
    name: str = Field(default="model", max_length=300)
    params: int = Field(default=0, ge=0)
    trainable_params: int = Field(default=0, ge=0)
    layers: list[LayerSummary] = Field(default_factory=list, max_length=MAX_LAYERS)


class OptimizerSummary(_Open):
    name: str = Field(max_length=100, description="Its class name: Adam, SGD, ...")
    learning_rate: float | None = Field(
        default=None, description="At train begin; None: a schedule."
    )
    momentum: float | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="get_config(), as JSON.")


class ProbeSummary(_Open):
    """What the callback measures each epoch, and what it could not."""

    train_images: int = Field(default=0, ge=0, description="Training-mode probe sample size.")
    bn_images: int = Field(default=0, ge=0)
    val_images: int | None = Field(default=None, ge=0)
    missing: list[str] = Field(
        default_factory=list, description="Sentences: what is not measured, and why."
    )


class FitSummary(_Open):
    """The model and the fit settings: what a TrainConfig says of a worker's run."""

    model: ModelSummary
    optimizer: OptimizerSummary | None = None
    loss: str | None = Field(default=None, max_length=300)
    metrics: list[str] = Field(default_factory=list, max_length=100)
    batch_size: int | None = Field(default=None, ge=1)
    epochs: int | None = Field(default=None, ge=1)
    steps_per_epoch: int | None = Field(default=None, ge=1)
    train_images: int | None = Field(default=None, ge=0)
    val_images: int | None = Field(default=None, ge=0)
    input_shape: list[int | None] | None = None
    num_classes: int | None = Field(default=None, ge=1)
    keras_version: str | None = Field(default=None, max_length=50)
    backend: str | None = Field(default=None, max_length=50, description="tensorflow, jax, torch")
    client_version: str | None = Field(default=None, max_length=50)
    probes: ProbeSummary = Field(default_factory=ProbeSummary)


class ExternalRunCreate(BaseModel):
    """POST /api/runs/external. The id is the client's, so that re-sending the
    create (after a timeout, or from ``curvelab sync``) is the same run."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{32}$", description="32 hex digits, made by the client.")
    name: PlainText | None = Field(default=None, max_length=200)
    source: Literal["keras"] = "keras"
    host: PlainText | None = Field(default=None, max_length=200)
    class_names: list[str] = Field(default_factory=list, max_length=100_000)
    summary: FitSummary


class EpochRecord(BaseModel):
    epoch: int = Field(ge=1, le=1_000_000, description="1-based.")
    values: dict[str, Number] = Field(max_length=MAX_VALUES)


class BatchRecord(BaseModel):
    step: int = Field(ge=1, description="Global step, 1-based.")
    epoch: float = Field(ge=0, description="Fractional epoch: 2.25 = a quarter into epoch 3.")
    values: dict[str, Number] = Field(max_length=MAX_VALUES)


class EpochsAppend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: list[EpochRecord] = Field(max_length=MAX_EPOCHS_PER_CALL)


class BatchesAppend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batches: list[BatchRecord] = Field(max_length=MAX_BATCHES_PER_CALL)


class AppendResult(BaseModel):
    stored: int = Field(description="Records new to the server.")
    duplicates: int = Field(description="Records it already had (a re-send): ignored.")
    epochs_done: int


ExternalEnd = Literal["succeeded", "failed", "interrupted"]


class RunFinish(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: ExternalEnd
    error: str | None = Field(default=None, max_length=20_000, description="Type: message.")


class ModelStored(BaseModel):
    """PUT /api/runs/{id}/model's answer."""

    bytes: int = Field(description="The size of the stored .keras file.")
