"""Response models of what a finished run's model learned: its evaluation and
its predictions."""

from __future__ import annotations

from pydantic import BaseModel, Field

from backend.evaluations import Weights


class ClassScores(BaseModel):
    name: str
    precision: float | None = Field(description="None when no image was predicted as the class.")
    recall: float | None = Field(description="None when the class has no validation image.")
    f1: float | None
    support: int = Field(description="Validation images of the class.")


class Mistake(BaseModel):
    index: int = Field(description="The image's position in the dataset's manifest.")
    path: str = Field(description="The stored file, relative to the dataset, e.g. 002/00013.png.")
    true: str
    predicted: str
    confidence: float = Field(description="The probability given to the predicted class.")
    true_probability: float = Field(description="The probability given to the true class.")


class EvaluationPublic(BaseModel):
    run_id: str
    weights: Weights = Field(description="best: the epoch of lowest val_loss; final: the last.")
    epoch: int = Field(description="The epoch (1-based) whose weights were evaluated.")
    available: list[Weights] = Field(description="The evaluations this run has.")
    images: int = Field(description="Validation images evaluated on.")
    accuracy: float
    loss: float | None
    macro_f1: float | None
    classes: list[str]
    per_class: list[ClassScores]
    confusion: list[list[int]] = Field(description="Rows: true class; columns: predicted class.")
    mistakes: list[Mistake] = Field(description="Wrong predictions, most confident first.")


class ClassProbability(BaseModel):
    name: str
    index: int
    probability: float


class PredictionPublic(BaseModel):
    run_id: str
    weights: Weights
    epoch: int | None = Field(description="The epoch whose weights answered, when known.")
    top: list[ClassProbability] = Field(description="The most probable classes, best first.")
