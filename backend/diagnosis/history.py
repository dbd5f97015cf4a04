"""Reading a run's stored epochs: rows of ``{"epoch", metric: value}``.

Values may be missing (a probe that was off) or null (a NaN loss); every
reader here turns both into ``None``, so rules compare plain floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

History = Sequence[Mapping[str, Any]]


def value(row: Mapping[str, Any], key: str) -> float | None:
    number = row.get(key)
    if isinstance(number, bool) or not isinstance(number, int | float):
        return None
    return float(number) if math.isfinite(number) else None


def series(history: History, key: str) -> list[float | None]:
    return [value(row, key) for row in history]


def diverged_at(history: History) -> int | None:
    """The first epoch whose training loss was recorded as null (NaN or infinite)."""
    for row in history:
        if "loss" in row and value(row, "loss") is None:
            return int(row["epoch"])
    return None


def num(number: float) -> str:
    """A loss or accuracy as the evidence quotes it: two decimals, or two
    significant digits below 0.1 (0.012, not 0.01), or a whole number when large."""
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    if number != 0 and abs(number) < 0.1:
        return f"{number:.2g}"
    return f"{number:.2f}"


def nice(number: float) -> float:
    """A suggested value to three significant digits: 1e-05, not 9.999999999999999e-06."""
    return float(f"{number:.3g}")


def pct(share: float) -> str:
    return f"{share:.0%}"
