"""The table every benchmark adds its rows to, and the statistics behind them.

A row is one figure: the baseline, curvelab's value, their ratio, the goal and
whether it holds. Medians and percentiles are computed here so that every
benchmark summarises its samples the same way.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Check = Callable[[float], bool]


@dataclass(frozen=True)
class Row:
    figure: str
    baseline: float | None
    curvelab: float | None
    unit: str = ""
    goal: str = ""
    check: Check | None = field(default=None, compare=False, repr=False)
    # What the check reads: the ratio (curvelab / baseline) unless told otherwise.
    checks: str = "ratio"
    ratio_value: float | None = None  # a ratio computed elsewhere (paired samples)

    @property
    def ratio(self) -> float | None:
        if self.ratio_value is not None:
            return self.ratio_value
        if self.baseline is None or self.curvelab is None or self.baseline == 0:
            return None
        return self.curvelab / self.baseline

    @property
    def ok(self) -> bool | None:
        subject = self.ratio if self.checks == "ratio" else self.curvelab
        if self.check is None or subject is None:
            return None
        return self.check(subject)


def at_most(limit: float) -> Check:
    return lambda value: value <= limit


def at_least(limit: float) -> Check:
    return lambda value: value >= limit


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100), linear between the closest ranks, as
    numpy's default."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def paired_ratios(values: Sequence[float], baselines: Sequence[float]) -> list[float]:
    """Each sample over the baseline sample taken next to it in time."""
    if len(values) != len(baselines):
        raise ValueError(f"{len(values)} samples against {len(baselines)} baselines")
    return [value / base for value, base in zip(values, baselines, strict=True)]


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table: it reads in a terminal and pastes into the README."""
    header = ("figure", "baseline", "curvelab", "ratio", "goal", "ok?")
    cells = [header]
    for row in rows:
        ok = {True: "yes", False: "NO", None: "-"}[row.ok]
        ratio = "-" if row.ratio is None else f"{row.ratio:.3f}×"
        cells.append(
            (
                row.figure,
                _number(row.baseline, row.unit),
                _number(row.curvelab, row.unit),
                ratio,
                row.goal or "-",
                ok,
            )
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for text in cpuinfo.read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        first = meminfo.read_text().splitlines()[0].split()
        memory = f"{int(first[1]) / 1024 / 1024:.0f} GiB"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "cpus (nproc)": str(len(os.sched_getaffinity(0))),
        "cpu model": model,
        "memory": memory,
        "python": platform.python_version(),
        "load average (1, 5, 15 min)": load,
    }
