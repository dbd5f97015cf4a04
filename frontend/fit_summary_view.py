"""What an external run (a user's own ``model.fit`` with ``curvelab.Callback``)
says of itself, as plain rows for the pages: its model layer by layer, its fit
settings, what its probes could not measure; and the one mapping from a run of
either kind to the settings that mean the same thing in both (``shared_settings``),
which the Runs list and Compare diff.

An external run has no TrainConfig (``config`` is None); its ``summary`` is the
FitSummary JSON of backend/fit_summary.py, read here as a plain dict and
tolerantly: a newer or older client may send more, less, or odd values, and a
page must still draw.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from frontend.run_view import flatten_config, format_value

Row = dict[str, Any]
Groups = list[tuple[str, list[tuple[str, str]]]]

WORKER = "worker"
# Named as TrainConfig names them, so a worker run's config and an external
# run's summary meet in the same column; "classes" is neither's field but both know it.
SHARED_SETTINGS = (
    "optimizer",
    "learning_rate",
    "batch_size",
    "epochs",
    "bn_momentum",
    "dropout",
    "classes",
)
# A finding's ``code`` was its rule's id ("batchnorm_lag") before findings
# carried the change to make in a Keras script; an id is never code.
_RULE_ID = re.compile(r"^[a-z][a-z0-9_]*$")
# Optimizer config keys shown as fit settings already, or never informative.
_SHOWN_ELSEWHERE = frozenset({"name", "learning_rate"})


def is_external(run: Row) -> bool:
    """Trained by the user's own script, not by a worker."""
    return (run.get("source") or WORKER) != WORKER


def source_text(run: Row) -> str:
    """``keras · laptop`` for an external run, ``worker`` for the others."""
    if not is_external(run):
        return WORKER
    host = run.get("host")
    return f"{run.get('source')} · {host}" if host else str(run.get("source"))


def summary_of(run: Row) -> Row:
    summary = run.get("summary")
    return summary if isinstance(summary, dict) else {}


def _section(summary: Row, key: str) -> Row:
    value = summary.get(key)
    return value if isinstance(value, dict) else {}


def layers_of(summary: Row) -> list[Row]:
    layers = _section(summary, "model").get("layers")
    if not isinstance(layers, list):
        return []
    return [layer for layer in layers if isinstance(layer, dict)]


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def bn_momenta(summary: Row) -> list[float]:
    """The distinct momenta of the model's BatchNormalization layers, sorted."""
    found = {
        m
        for layer in layers_of(summary)
        if "BatchNormalization" in str(layer.get("type") or "")
        and (m := _number(layer.get("momentum"))) is not None
    }
    return sorted(found)


def dropout_rates(summary: Row) -> list[float]:
    """The distinct rates of the model's dropout layers (Dropout, SpatialDropout2D...)."""
    found = {
        r
        for layer in layers_of(summary)
        if "Dropout" in str(layer.get("type") or "")
        and (r := _number(layer.get("rate"))) is not None
    }
    return sorted(found)


def _one_or_all(values: Sequence[float], none: Any = None) -> Any:
    if not values:
        return none
    return values[0] if len(values) == 1 else list(values)


def _optimizer(summary: Row) -> Row:
    return _section(summary, "optimizer")


def _learning_rate(summary: Row) -> float | str | None:
    optimizer = _optimizer(summary)
    if not optimizer:
        return None
    rate = _number(optimizer.get("learning_rate"))
    return rate if rate is not None else "schedule"  # the client sends None for a schedule


def _classes(run: Row) -> int | None:
    summary = summary_of(run)
    count = summary.get("num_classes")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return count
    names = run.get("class_names") or []
    return len(names) if names else None


def shared_settings(run: Row) -> Row:
    """The settings that mean the same thing for a worker's run and an external
    one, under TrainConfig's names: what Compare diffs across kinds.

    BatchNorm momentum is None without BatchNorm; dropout is 0 without dropout
    (as a TrainConfig says it); several different values in one model, a list."""
    if not is_external(run):
        config = run.get("config") or {}
        return {
            "optimizer": config.get("optimizer"),
            "learning_rate": config.get("learning_rate"),
            "batch_size": config.get("batch_size"),
            "epochs": config.get("epochs"),
            "bn_momentum": config.get("bn_momentum") if config.get("batch_norm", True) else None,
            "dropout": config.get("dropout"),
            "classes": len(run.get("class_names") or []) or None,
        }
    summary = summary_of(run)
    name = _optimizer(summary).get("name")
    return {
        # Keras' class names (Adam, SGD, RMSprop) lower-cased are TrainConfig's values.
        "optimizer": str(name).lower() if name else None,
        "learning_rate": _learning_rate(summary),
        "batch_size": summary.get("batch_size"),
        "epochs": summary.get("epochs"),
        "bn_momentum": _one_or_all(bn_momenta(summary)),
        "dropout": _one_or_all(dropout_rates(summary), none=0.0),
        "classes": _classes(run),
    }


def shape_text(shape: Any) -> str:
    """Keras' ``[None, 32, 32, 16]`` as ``(None, 32, 32, 16)``; several outputs, each."""
    if shape is None:
        return "—"
    if isinstance(shape, list | tuple):
        if shape and all(isinstance(s, list | tuple) for s in shape):
            return ", ".join(shape_text(s) for s in shape)
        return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"
    if isinstance(shape, dict):
        return ", ".join(f"{k}: {shape_text(v)}" for k, v in shape.items())
    return str(shape)


def _layer_settings(layer: Row) -> str:
    """What sets the layer apart, in a few words: ``momentum 0.99``, ``rate 0.3``."""
    parts = []
    if layer.get("momentum") is not None:
        parts.append(f"momentum {format_value('', layer['momentum'])}")
    if layer.get("rate") is not None:
        parts.append(f"rate {format_value('', layer['rate'])}")
    if layer.get("filters") is not None:
        parts.append(f"{layer['filters']} filters")
    if layer.get("units") is not None:
        parts.append(f"{layer['units']} units")
    if layer.get("activation") and layer["activation"] != "linear":
        parts.append(str(layer["activation"]))
    if layer.get("trainable") is False:
        parts.append("frozen")
    return " · ".join(parts)


def layer_rows(summary: Row) -> list[Row]:
    """The model layer by layer, as Keras' ``model.summary()`` lists it, with
    BatchNorm momenta and dropout rates in view; a nested model's layers named by path."""
    rows = []
    for layer in layers_of(summary):
        name = str(layer.get("name") or "?")
        parent = layer.get("parent")
        params = layer.get("params")
        rows.append(
            {
                "layer": f"{parent}/{name}" if parent else name,
                "type": str(layer.get("type") or "?"),
                "output shape": shape_text(layer.get("output_shape")),
                "params": params if isinstance(params, int) and not isinstance(params, bool) else 0,
                "settings": _layer_settings(layer),
            }
        )
    return rows


def model_caption(summary: Row) -> str:
    """``model "cnn" · 12 layers · 1,234,567 parameters (1,234,000 trainable)``."""
    model = _section(summary, "model")
    params, trainable = model.get("params"), model.get("trainable_params")
    text = f'model "{model.get("name") or "model"}" · {len(layers_of(summary))} layers'
    if isinstance(params, int) and params:
        text += f" · {params:,} parameters"
        if isinstance(trainable, int) and trainable != params:
            text += f" ({trainable:,} trainable)"
    return text


def _count(value: Any) -> str | None:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else None


def _pairs(items: Sequence[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(k, format_value(k, v)) for k, v in items if v is not None and v != []]


def fit_groups(run: Row) -> Groups:
    """An external run's fit settings as (group, [(field, shown value)]): what
    a worker run's page shows of its TrainConfig, said by the summary."""
    summary = summary_of(run)
    shared = shared_settings(run)
    optimizer = _optimizer(summary)
    momenta, rates = bn_momenta(summary), dropout_rates(summary)
    input_shape = summary.get("input_shape")
    groups: Groups = [
        (
            "Fit",
            _pairs(
                [
                    ("optimizer", optimizer.get("name")),
                    ("learning_rate", shared["learning_rate"]),
                    ("momentum", optimizer.get("momentum")),
                    ("loss", summary.get("loss")),
                    ("metrics", summary.get("metrics")),
                    ("batch_size", summary.get("batch_size")),
                    ("epochs", summary.get("epochs")),
                    ("steps_per_epoch", summary.get("steps_per_epoch")),
                    ("train_images", summary.get("train_images")),
                    ("val_images", summary.get("val_images")),
                ]
            ),
        ),
        (
            "Model",
            _pairs(
                [
                    ("input_shape", shape_text(input_shape) if input_shape else None),
                    ("classes", shared["classes"]),
                    ("layers", len(layers_of(summary))),
                    ("params", _count(_section(summary, "model").get("params"))),
                    # "none": a model without BatchNorm says so, rather than hiding the row.
                    ("bn_momentum", momenta or "none"),
                    ("dropout", rates or "none"),
                ]
            ),
        ),
    ]
    config = optimizer.get("config")
    flat = flatten_config(config) if isinstance(config, dict) else {}
    settings = [(k, v) for k, v in flat.items() if k not in _SHOWN_ELSEWHERE]
    if settings:
        groups.append(("Optimizer config", _pairs(settings)))
    probes = _section(summary, "probes")
    groups.append(
        (
            "Environment",
            _pairs(
                [
                    ("host", run.get("host")),
                    ("keras", summary.get("keras_version")),
                    ("backend", summary.get("backend")),
                    ("client", summary.get("client_version")),
                    ("probe train images", probes.get("train_images")),
                    ("probe bn images", probes.get("bn_images")),
                    ("probe val images", probes.get("val_images")),
                ]
            ),
        )
    )
    return [(title, pairs) for title, pairs in groups if pairs]


def probe_notes(run: Row) -> list[str]:
    """The client's sentences on what its probes did not measure, and why."""
    missing = _section(summary_of(run), "probes").get("missing")
    return [str(m) for m in missing if m] if isinstance(missing, list) else []


def finding_change(finding: Row) -> str | None:
    """The change to make in a Keras script for a finding, e.g.
    ``keras.layers.BatchNormalization(momentum=0.9)``; None when it has none.

    Tolerant of where the API puts it: ``code`` once it holds code (a rule id
    such as ``batchnorm_lag`` is not), or a key of its own."""
    for key in ("keras_code", "code_change", "script_change"):
        value = finding.get(key)
        if isinstance(value, str) and value.strip():
            return value
    code = finding.get("code")
    if isinstance(code, str) and code.strip() and not _RULE_ID.match(code):
        return code
    return None


def finding_key(finding: Row) -> str:
    """A finding's stable id for widget keys: its rule."""
    for key in ("rule", "id", "code"):
        value = finding.get(key)
        if isinstance(value, str) and _RULE_ID.match(value):
            return value
    return str(finding.get("title") or "finding")
