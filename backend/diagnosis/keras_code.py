"""A finding's suggestion as the change to make in a Keras script.

``Finding.suggestion`` is a semantic patch in TrainConfig's terms
(``{"bn_momentum": 0.9}``): a worker's run applies it to a clone. The server
cannot re-run a user's own script, so every finding also says the same
change as code (``keras.layers.BatchNormalization(momentum=0.9)``); one
renderer here, so the patch and its code never say different things.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend.diagnosis.run_facts import RunFacts

# Keras 3's optimizer classes (keras.optimizers.*); another name is the
# user's own class and is written without the module.
KERAS_OPTIMIZER_CLASSES = frozenset(
    {
        "Adadelta",
        "Adafactor",
        "Adagrad",
        "Adam",
        "AdamW",
        "Adamax",
        "Ftrl",
        "Lamb",
        "Lion",
        "LossScaleOptimizer",
        "Muon",
        "Nadam",
        "RMSprop",
        "SGD",
    }
)
# Patch keys that are arguments of model.fit: one call says them all.
FIT_ARGUMENTS = ("batch_size", "epochs", "validation_split")
# Layers named in a comment before "and N more".
NAMED_LAYERS = 3


def patch_code(patch: Mapping[str, Any], facts: RunFacts) -> str | None:
    """The Keras code (one line per change) that makes the patch's change in
    the run's own script; None for an empty patch."""
    lines: list[str] = []
    fit = {key: patch[key] for key in FIT_ARGUMENTS if key in patch}
    for key, new in patch.items():
        if key in FIT_ARGUMENTS:
            if fit:  # at the first of them, all of them
                arguments = ", ".join(f"{name}={_literal(value)}" for name, value in fit.items())
                lines.append(f"model.fit(..., {arguments})")
                fit = {}
            continue
        lines.append(_line(key, new, facts))
    return "\n".join(lines) or None


def _line(key: str, new: Any, facts: RunFacts) -> str:
    if key == "bn_momentum":
        return f"keras.layers.BatchNormalization(momentum={_literal(new)})" + _which_bn(new, facts)
    if key == "learning_rate":
        return _optimizer(new, facts)
    if key == "dropout":
        if not new:
            return "Remove the keras.layers.Dropout layers (or set their rate to 0)"
        return f"keras.layers.Dropout({_literal(new)})"
    if key == "early_stopping_patience":
        return (
            f"callbacks=[keras.callbacks.EarlyStopping(patience={_literal(new)}, "
            "restore_best_weights=True)]"
        )
    if key == "filters" and isinstance(new, list):
        now = ", ".join(str(f) for f in facts.filters)
        wanted = ", ".join(str(f) for f in new)
        return (
            f"Double the filters of the convolutions: {now} → {wanted}"
            if now
            else f"Convolutions with more filters: {wanted}"
        )
    if key == "dense_units":
        before = f" (now {facts.dense_units})" if facts.dense_units else ""
        return f"A wider hidden Dense layer: keras.layers.Dense({_literal(new)}){before}"
    if key == "augment" and isinstance(new, Mapping):
        return _augment(new)
    return f"Set {key} to {_literal(new)}"


def _which_bn(new: Any, facts: RunFacts) -> str:
    """Which layers the change is for, when it is not all of them (the others
    already forget as fast)."""
    slower = [name for name, momentum in facts.bn_layers if momentum > new]
    if not slower or len(slower) == len(facts.bn_layers):
        return ""
    named = ", ".join(slower[:NAMED_LAYERS])
    if len(slower) > NAMED_LAYERS:
        named += f" and {len(slower) - NAMED_LAYERS} more"
    return f"  # for {named}"


def _optimizer(learning_rate: Any, facts: RunFacts) -> str:
    name = facts.optimizer_class
    arguments = f"learning_rate={_literal(learning_rate)}"
    # Keep SGD's momentum: a new optimizer without it would change two things.
    if name == "SGD" and facts.momentum:
        arguments += f", momentum={_literal(facts.momentum)}"
    if name in KERAS_OPTIMIZER_CLASSES:
        return f"keras.optimizers.{name}({arguments})"
    if name and name.isidentifier():
        return f"{name}({arguments})"
    return f"Your optimizer with {arguments}"


def _augment(augment: Mapping[str, Any]) -> str:
    layers = []
    if augment.get("flip"):
        layers.append('keras.layers.RandomFlip("horizontal")')
    if augment.get("rotate"):
        layers.append(f"keras.layers.RandomRotation({_literal(augment['rotate'])})")
    if augment.get("zoom"):
        layers.append(f"keras.layers.RandomZoom({_literal(augment['zoom'])})")
    if not layers:
        return "No augmentation layers"
    return "Augment the training images, right after keras.Input: " + ", ".join(layers)


def _literal(value: Any) -> str:
    """A Python literal as a script writes it: 0.0001, 1e-05, 64, True."""
    if isinstance(value, float):
        return repr(value)
    return repr(value) if isinstance(value, bool | int | str) else str(value)
