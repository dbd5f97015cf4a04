"""What the rules know about a run: one reader for both kinds of run.

A worker's run is described by its TrainConfig; an external run (a user's own
``model.fit`` with ``curvelab.Callback``) by the FitSummary its client sent.
Both become a :class:`RunFacts`, and every rule reads only that, so a rule is
written once and says the same thing of both. A fact that a run does not tell
is None (a learning-rate schedule has no one learning rate; an external run
has no stored dataset), and the rules that need it stay quiet.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from backend.diagnosis.facts import DatasetFacts
from backend.fit_summary import FitSummary, LayerSummary
from backend.train_config import Augment, TrainConfig

Source = Literal["worker", "keras"]

# The TrainConfig's optimizer names as Keras spells their classes.
KERAS_OPTIMIZERS = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}
# Keras 3 preprocessing layers that change training images at random.
AUGMENTING_PREFIX = "Random"
# Repairs of an invalid stored summary before giving up on it: each round
# drops the values pydantic names, so a few rounds clear nested errors too.
SALVAGE_ROUNDS = 8


@dataclass(frozen=True)
class RunFacts:
    """The settings of a run that the rules read, from either source.

    ``bn_layers``: (layer name, momentum) of each BatchNormalization whose
    moving averages train; ``bn_momentum`` is the largest of them, the one
    that lags most (its share of initial values is ``momentum ** steps``).
    """

    source: Source = "worker"
    batch_norm: bool = False
    bn_layers: tuple[tuple[str, float], ...] = ()
    bn_momentum: float | None = None
    dropout_rates: tuple[float, ...] = ()
    optimizer: str | None = None  # as the run names it: "adam" (TrainConfig), "SGD" (Keras)
    optimizer_class: str | None = None  # the Keras class: Adam, SGD, ...
    learning_rate: float | None = None  # None: unknown, or a schedule
    momentum: float | None = None  # the optimizer's (SGD)
    batch_size: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    num_classes: int | None = None
    augment: Augment = field(default_factory=Augment)
    augmented: bool = False
    early_stopping_patience: int | None = None
    validation_split: float | None = None
    filters: tuple[int, ...] = ()
    dense_units: int | None = None
    # The stored dataset (class counts, split, leakage): worker runs only.
    dataset: DatasetFacts | None = None

    @property
    def external(self) -> bool:
        return self.source == "keras"

    @property
    def dropout(self) -> float:
        """The largest dropout rate; 0 without dropout."""
        return max(self.dropout_rates, default=0.0)

    @classmethod
    def from_config(cls, config: TrainConfig, dataset: DatasetFacts | None = None) -> RunFacts:
        steps = None
        if dataset is not None and dataset.train_images:
            steps = math.ceil(dataset.train_images / config.batch_size)
        # An application has BatchNorm throughout, whatever batch_norm says,
        # and none of the Conv+BN family's knobs (filters, dense_units):
        # a rule suggests no change to them.
        conv_bn = config.architecture == "conv_bn"
        batch_norm = config.batch_norm or not conv_bn
        return cls(
            source="worker",
            batch_norm=batch_norm,
            # The config's one momentum is every BN layer's (the worker sets
            # it on each, nested ones included): no names to give.
            bn_momentum=config.bn_momentum if batch_norm else None,
            dropout_rates=(config.dropout,) if config.dropout > 0 else (),
            optimizer=config.optimizer,
            optimizer_class=KERAS_OPTIMIZERS.get(config.optimizer),
            learning_rate=config.learning_rate,
            momentum=config.momentum if config.optimizer == "sgd" else None,
            batch_size=config.batch_size,
            epochs=config.epochs,
            steps_per_epoch=steps,
            num_classes=dataset.num_classes if dataset is not None else None,
            augment=config.augment,
            augmented=bool(config.augment.flip or config.augment.rotate or config.augment.zoom),
            early_stopping_patience=config.early_stopping_patience,
            validation_split=config.validation_split,
            filters=tuple(config.filters) if conv_bn else (),
            dense_units=config.dense_units if conv_bn else None,
            dataset=dataset,
        )

    @classmethod
    def from_summary(
        cls, summary: FitSummary | None, class_names: list[str] | None = None
    ) -> RunFacts:
        names = list(class_names or [])
        if summary is None:
            return cls(source="keras", num_classes=len(names) or None)
        layers = summary.model.layers
        batch_norm = [layer for layer in layers if _is_batch_norm(layer)]
        # A frozen BatchNormalization runs in inference mode: its averages never move.
        moving = tuple(
            (layer.name, momentum)
            for layer in batch_norm
            if layer.trainable and (momentum := _fraction(layer.momentum)) is not None
        )
        optimizer = summary.optimizer
        name = optimizer.name if optimizer is not None else None
        dense = [layer.units for layer in layers if layer.type == "Dense" and layer.units]
        types = {layer.type for layer in layers}
        return cls(
            source="keras",
            batch_norm=bool(batch_norm),
            bn_layers=moving,
            bn_momentum=max((momentum for _, momentum in moving), default=None),
            dropout_rates=tuple(
                rate
                for layer in layers
                if "Dropout" in layer.type and (rate := _fraction(layer.rate)) is not None
            ),
            optimizer=name,
            optimizer_class=name,
            learning_rate=_positive(optimizer.learning_rate) if optimizer else None,
            momentum=_positive(optimizer.momentum) if optimizer else None,
            batch_size=summary.batch_size,
            epochs=summary.epochs,
            steps_per_epoch=summary.steps_per_epoch or _steps(summary),
            num_classes=_classes(summary, names),
            augment=Augment(flip="RandomFlip" in types),
            augmented=any(kind.startswith(AUGMENTING_PREFIX) for kind in types),
            filters=tuple(layer.filters for layer in layers if layer.filters),
            # The last Dense is the classifier: its units are the class count.
            dense_units=max(dense[:-1], default=None),
        )


def read_summary(raw: Any) -> FitSummary | None:
    """A stored FitSummary, read tolerantly: values that do not validate are
    dropped (their fields take defaults), a layer without a type is left out;
    None when nothing usable is left. Never raises."""
    if not isinstance(raw, dict):
        return None
    data: dict[str, Any] = dict(raw)
    for _ in range(SALVAGE_ROUNDS):
        try:
            return FitSummary.model_validate(data)
        except ValidationError as error:
            data = _without(data, [tuple(detail["loc"]) for detail in error.errors()])
        except (TypeError, ValueError):  # a value pydantic cannot even look at
            return None
    return None


def _without(data: dict[str, Any], locations: list[tuple[Any, ...]]) -> dict[str, Any]:
    """A copy of ``data`` without the values at ``locations`` (pydantic error
    locations). Where a location goes past what is there (a required key
    missing, or a union member's tag), the object it stops at goes: a layer
    without its type is left out; a summary without a model gets an empty one."""
    data = copy.deepcopy(data)
    removals: dict[tuple[int, Any], tuple[Any, Any]] = {}
    for location in locations:
        path = _existing(data, location)
        if not path:
            if location[:1] == ("model",):
                data["model"] = {}
            continue
        parent = _at(data, path[:-1])
        # A bad number in a list of numbers (a shape): without it the rest would
        # mean something else, so the whole list goes. A bad layer goes alone.
        if isinstance(parent, list) and not any(isinstance(item, dict) for item in parent):
            path = path[:-1]
            parent = _at(data, path[:-1])
        # Two errors in one layer remove it once, not it and its neighbour.
        removals[(id(parent), path[-1])] = (parent, path[-1])
    # Descending list indices, so each removal leaves the others' indices right.
    ordered = sorted(
        removals.values(), key=lambda item: item[1] if isinstance(item[1], int) else -1
    )
    for parent, key in reversed(ordered):
        if isinstance(parent, dict):
            parent.pop(key, None)
        elif isinstance(parent, list) and isinstance(key, int) and key < len(parent):
            del parent[key]
    if not isinstance(data.get("model"), dict):
        data["model"] = {}
    return data


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


def _existing(data: Any, location: tuple[Any, ...]) -> tuple[Any, ...]:
    """The longest prefix of ``location`` that names a value in ``data``."""
    path: list[Any] = []
    node = data
    for key in location:
        in_dict = isinstance(node, dict) and key in node
        in_list = isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
        if not (in_dict or in_list):
            break
        node = node[key]
        path.append(key)
    return tuple(path)


def _is_batch_norm(layer: LayerSummary) -> bool:
    return layer.type.endswith("BatchNormalization")


def _fraction(number: float | None) -> float | None:
    """A momentum or a rate: strictly between 0 and 1, or None."""
    if number is None or not math.isfinite(number) or not 0 < number < 1:
        return None
    return float(number)


def _positive(number: float | None) -> float | None:
    if number is None or not math.isfinite(number) or number <= 0:
        return None
    return float(number)


def _classes(summary: FitSummary, class_names: list[str]) -> int | None:
    """The class count, where the task is classification: the rules compare
    losses with the cross-entropy of guessing (log of the count), which means
    nothing for a regression's loss."""
    if class_names:
        return len(class_names)
    loss = (summary.loss or "").lower().replace("_", "")
    if "crossentropy" not in loss or not summary.num_classes:
        return None
    # One sigmoid unit: two classes.
    return 2 if summary.num_classes == 1 and "binary" in loss else summary.num_classes


def _steps(summary: FitSummary) -> int | None:
    if summary.train_images and summary.batch_size:
        return math.ceil(summary.train_images / summary.batch_size)
    return None
