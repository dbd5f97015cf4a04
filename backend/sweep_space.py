"""A sweep's search space against TrainConfig: which knobs exist, what values
they may take, and the config a trial's values make.

Each knob is a TrainConfig field, dotted for a nested one (``augment.flip``).
A list of values becomes a categorical choice; a range becomes Optuna's
``suggest_int`` for a whole-number field and ``suggest_float`` otherwise.
Every listed value and every range bound is checked by merging it into the
base config: a space that could make an invalid run is refused up front, with
the knob and value named, instead of failing runs later.
"""

from __future__ import annotations

import itertools
import json
import math
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import BaseModel, ValidationError

from backend.api.sweep_schemas import Range
from backend.train_config import TrainConfig

Kind = Literal["int", "float", "other"]
# What Optuna's categorical distribution stores as it is; anything else (a
# list of filters, an augment object) is stored as its JSON text.
_SCALARS = (type(None), bool, int, float, str)


class SpaceError(ValueError):
    """A space, variant or trial that cannot make a valid TrainConfig: the
    message names the knob and value, for a 422."""


@dataclass(frozen=True)
class Knob:
    name: str
    kind: Kind
    values: list[Any] | None = None
    range: Range | None = None

    @property
    def _as_json(self) -> bool:
        return self.values is not None and not all(isinstance(v, _SCALARS) for v in self.values)

    def distribution(self) -> BaseDistribution:
        if self.values is not None:
            return CategoricalDistribution([self.encode(value) for value in self.values])
        assert self.range is not None
        if self.kind == "int":
            low, high = _whole_bounds(self.name, self.range)
            return IntDistribution(low, high, log=self.range.log)
        return FloatDistribution(self.range.low, self.range.high, log=self.range.log)

    def encode(self, value: Any) -> Any:
        """The value as an Optuna param (a grid's enqueued trial names it so)."""
        return json.dumps(value, sort_keys=True) if self._as_json else value

    def decode(self, param: Any) -> Any:
        return json.loads(param) if self._as_json else param


def _field(name: str) -> Any:
    """The annotation of the TrainConfig field ``name`` (dotted); SpaceError if none."""
    model: type[BaseModel] = TrainConfig
    parts = name.split(".")
    for depth, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            where = "TrainConfig" if depth == 0 else ".".join(parts[:depth])
            known = ", ".join(sorted(model.model_fields))
            raise SpaceError(f"space.{name}: {where} has no field {part!r} (it has: {known})")
        annotation = info.annotation
        if depth == len(parts) - 1:
            return annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise SpaceError(f"space.{name}: {'.'.join(parts[: depth + 1])} has no fields")
        model = annotation
    raise SpaceError(f"space.{name}: not a field name")


def _kind(annotation: Any) -> Kind:
    if get_origin(annotation) in (Union, types.UnionType):
        inner = [arg for arg in get_args(annotation) if arg is not type(None)]
        annotation = inner[0] if len(inner) == 1 else None
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return "other"


def _whole_bounds(name: str, span: Range) -> tuple[int, int]:
    low, high = math.ceil(span.low), math.floor(span.high)
    if low > high:
        raise SpaceError(f"space.{name}: no whole number lies in {span.low:g}..{span.high:g}")
    return low, high


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def set_dotted(config: dict[str, Any], name: str, value: Any) -> None:
    *parents, last = name.split(".")
    node = config
    for part in parents:
        child = node.get(part)
        node[part] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    node[last] = value


def get_dotted(config: Mapping[str, Any], name: str) -> Any:
    value: Any = config
    for part in name.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def apply(base: TrainConfig, patch: Mapping[str, Any]) -> TrainConfig:
    """The base with the patch's (dotted) fields set; ValidationError if invalid."""
    config = base.model_dump(mode="json")
    for name, value in patch.items():
        set_dotted(config, name, value)
    return TrainConfig.model_validate(config)


def checked(base: TrainConfig, patch: Mapping[str, Any], what: str) -> TrainConfig:
    """``apply``, a SpaceError naming ``what`` when the result is not valid."""
    for name in patch:
        _field(name)
    try:
        return apply(base, patch)
    except ValidationError as exc:
        raise SpaceError(f"{what} does not make a valid TrainConfig: {_reason(exc)}") from None


def parse_space(base: TrainConfig, space: Mapping[str, list[Any] | Range]) -> list[Knob]:
    """The knobs, in the order given, each value and bound checked on the base."""
    knobs = []
    for name, spec in space.items():
        kind = _kind(_field(name))
        if isinstance(spec, Range):
            if kind == "other":
                raise SpaceError(
                    f"space.{name}: a range needs a number field; give a list of values instead"
                )
            knob = Knob(name, kind, range=spec)
            bounds = _whole_bounds(name, spec) if kind == "int" else (spec.low, spec.high)
            for bound in bounds:
                checked(base, {name: bound}, f"space.{name}: the bound {bound:g}")
        else:
            if not spec:
                raise SpaceError(f"space.{name}: give at least one value")
            knob = Knob(name, kind, values=list(spec))
            for value in spec:
                checked(base, {name: value}, f"space.{name}: the value {_short(value)}")
        knobs.append(knob)
    return knobs


def grid_size(knobs: list[Knob]) -> int:
    return math.prod(len(knob.values or ()) for knob in knobs)


def grid(knobs: list[Knob]) -> Iterator[dict[str, Any]]:
    """Every combination of the lists, the first knob slowest."""
    names = [knob.name for knob in knobs]
    for values in itertools.product(*(knob.values or () for knob in knobs)):
        yield dict(zip(names, values, strict=True))


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else _short(value, 40)


def describe(params: Mapping[str, Any], limit: int = 200) -> str:
    """A run's name from its knobs' values: "learning_rate=0.001 bn_momentum=0.9"."""
    text = " ".join(f"{name}={_plain(value)}" for name, value in params.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"
