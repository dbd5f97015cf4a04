"""The FitSummary of a model and its fit: what a TrainConfig says of a
worker's run, read from the user's own Keras objects (the body's schema is
backend/fit_summary.py, which this package never imports).

Every reader is defensive: a layer or optimizer of a kind not foreseen here
gives fewer fields, never an exception (the fit must not pay for it).
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np

import curvelab

MAX_LAYERS = 5000  # backend.fit_summary.MAX_LAYERS
DROPOUT_TYPES = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")


def layers(model: keras.Model) -> list[dict[str, Any]]:
    """Every layer, those of nested models (and of layers made of layers)
    flattened after the model that holds them, with that model's path as
    ``parent``."""
    result: list[dict[str, Any]] = []
    seen: set[int] = set()
    for layer, parent in _walk(model, None, seen):
        if len(result) >= MAX_LAYERS:
            break
        result.append(layer_summary(layer, parent))
    return result


def _walk(
    holder: keras.layers.Layer, parent: str | None, seen: set[int]
) -> Iterator[tuple[keras.layers.Layer, str | None]]:
    for layer in _children(holder):
        if id(layer) in seen:  # a shared layer: listed once
            continue
        seen.add(id(layer))
        yield layer, parent
        if _children(layer):
            path = layer.name if parent is None else f"{parent}/{layer.name}"
            yield from _walk(layer, path, seen)


def _children(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    # A layer built of layers (a residual block, a wrapper such as
    # TimeDistributed): Keras tracks them in ``_layers``.
    try:
        return [child for child in getattr(layer, "_layers", None) or [] if child is not layer]
    except Exception:
        return []


def layer_summary(layer: keras.layers.Layer, parent: str | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "name": str(layer.name)[:300],
        "type": type(layer).__name__[:200],
        "output_shape": _output_shape(layer),
        "params": _params(layer.weights),
        "trainable_params": _params(layer.trainable_weights),
        "trainable": bool(layer.trainable),
        "parent": parent[:300] if parent else None,
    }
    if isinstance(layer, keras.layers.BatchNormalization):
        summary["momentum"] = _float(layer.momentum)
    if type(layer).__name__ in DROPOUT_TYPES or isinstance(layer, keras.layers.Dropout):
        summary["rate"] = _float(getattr(layer, "rate", None))
    for key in ("units", "filters"):
        value = getattr(layer, key, None)
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            summary[key] = int(value)
    activation = _activation(getattr(layer, "activation", None))
    if activation:
        summary["activation"] = activation
    return summary


def _output_shape(layer: keras.layers.Layer) -> Any:
    try:
        output = layer.output  # a functional model's layers know it
    except Exception:
        return None
    return _shape_of(output)


def _shape_of(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_shape_of(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _shape_of(item) for key, item in value.items()}
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    return [None if dim is None else int(dim) for dim in shape]


def _params(weights: Sequence[Any]) -> int:
    total = 0
    for weight in weights:
        try:
            total += int(np.prod(weight.shape))
        except Exception:
            continue
    return total


def _activation(value: Any) -> str | None:
    if value is None:
        return None
    name = getattr(value, "__name__", None) or type(value).__name__
    return str(name)[:100]


def optimizer_summary(optimizer: Any) -> dict[str, Any] | None:
    if optimizer is None:
        return None
    inner = getattr(optimizer, "inner_optimizer", None)  # LossScaleOptimizer (mixed precision)
    if inner is not None:
        optimizer = inner
    try:
        config = jsonable(optimizer.get_config())
    except Exception:
        config = {}
    if not isinstance(config, dict):
        config = {}
    summary: dict[str, Any] = {"name": type(optimizer).__name__[:100], "config": config}
    schedule = getattr(optimizer, "_learning_rate", None)
    is_schedule = isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
    if is_schedule or (callable(schedule) and not hasattr(schedule, "assign")):
        summary["learning_rate"] = None  # its config is in config["learning_rate"]
    else:
        summary["learning_rate"] = _float(_numpy(getattr(optimizer, "learning_rate", None)))
    summary["momentum"] = _float(config.get("momentum"))
    return summary


def loss_name(model: keras.Model) -> str | None:
    loss = getattr(model, "loss", None)
    if loss is None:
        return None
    return _name(loss)[:300]


def _name(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {_name(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_name(item) for item in value)
    if isinstance(value, keras.losses.Loss | keras.metrics.Metric):
        return type(value).__name__
    return str(getattr(value, "__name__", None) or getattr(value, "name", None) or value)


def metric_names(model: keras.Model) -> list[str]:
    try:
        config = model.get_compile_config() or {}
    except Exception:
        return []
    metrics = config.get("metrics") or []
    if isinstance(metrics, Mapping):
        metrics = list(metrics.values())
    names: list[str] = []
    for metric in metrics if isinstance(metrics, list | tuple) else [metrics]:
        if isinstance(metric, Mapping):  # serialized: {"class_name": ..., "config": {...}}
            name = (metric.get("config") or {}).get("name") or metric.get("class_name")
        else:
            name = _name(metric)
        if name:
            names.append(str(name)[:200])
    return names[:100]


def input_shape(model: keras.Model) -> list[int | None] | None:
    try:
        shape = model.input_shape
    except Exception:
        return None
    if isinstance(shape, list) and shape and isinstance(shape[0], tuple | list):
        shape = shape[0]  # several inputs: the first
    if not isinstance(shape, tuple | list):
        return None
    try:
        return [None if dim is None else int(dim) for dim in shape]
    except (TypeError, ValueError):
        return None


def num_classes(model: keras.Model, class_names: Sequence[str] = ()) -> int | None:
    if class_names:
        return len(class_names)
    try:
        shape = model.output_shape
    except Exception:
        return None
    if isinstance(shape, tuple) and shape and isinstance(shape[-1], int) and shape[-1] >= 1:
        return int(shape[-1])
    return None


def fit_summary(
    model: keras.Model,
    params: Mapping[str, Any],
    *,
    batch_size: int | None,
    train_images: int | None,
    val_images: int | None,
    class_names: Sequence[str] = (),
    probes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body's ``summary``: the model, the optimizer, the fit's settings."""
    steps = params.get("steps")
    return {
        "model": {
            "name": str(model.name)[:300],
            "params": _params(model.weights),
            "trainable_params": _params(model.trainable_weights),
            "layers": layers(model),
        },
        "optimizer": optimizer_summary(getattr(model, "optimizer", None)),
        "loss": loss_name(model),
        "metrics": metric_names(model),
        "batch_size": batch_size,
        "epochs": _positive(params.get("epochs")),
        "steps_per_epoch": _positive(steps),
        "train_images": train_images,
        "val_images": val_images,
        "input_shape": input_shape(model),
        "num_classes": num_classes(model, class_names),
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "client_version": curvelab.__version__,
        "python_version": platform.python_version(),
        "probes": dict(probes or {"missing": []}),
    }


def create_body(
    run_id: str,
    name: str | None,
    host: str | None,
    class_names: Sequence[str],
    summary: dict[str, Any],
) -> dict[str, Any]:
    """POST /api/runs/external (backend.fit_summary.ExternalRunCreate)."""
    return {
        "id": run_id,
        "name": name[:200] if name else None,
        "source": "keras",
        "host": host[:200] if host else None,
        "class_names": [str(item) for item in class_names],
        "summary": summary,
    }


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can hold it: numpy scalars as numbers, NaN as null,
    anything else as its string (an optimizer's config may hold objects)."""
    if depth > 20:
        return None
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _float(value)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item, depth + 1) for item in value]
    if isinstance(value, np.ndarray) and value.size <= 100:
        return jsonable(value.tolist(), depth + 1)
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)[:1000]


def _numpy(value: Any) -> Any:
    if value is None:
        return None
    try:
        return keras.ops.convert_to_numpy(value)
    except Exception:
        return value


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 1 else None
