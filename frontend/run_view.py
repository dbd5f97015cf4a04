"""What the run pages say about a run, as plain functions: the config as
labelled rows, progress and ETA, best epochs, the fields that differ
between runs, the metrics as CSV.

The frontend never imports backend, so the config's layout is spelled out
here; a field this list does not know yet is still shown, under "other".
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from frontend.architectures import without_unused
from frontend.choices import unique_labels
from frontend.config_form import GROUPS

Row = dict[str, Any]

ACTIVE_STATUSES = frozenset({"queued", "running"})
# Streamlit's Material icons and colours, not emoji: those need a font that a
# browser may lack (headless Chromium draws empty boxes).
STATUS_MARKDOWN = {
    "queued": ":gray[:material/schedule: queued]",
    "running": ":blue[:material/play_circle: running]",
    "succeeded": ":green[:material/check_circle: succeeded]",
    "failed": ":red[:material/error: failed]",
    "cancelled": ":orange[:material/cancel: cancelled]",
    # An external run whose script was stopped (KeyboardInterrupt): final, like cancelled.
    "interrupted": ":orange[:material/stop_circle: interrupted]",
    # Stopped by its sweep's pruner as hopeless: final; the reason is in ``error``.
    "pruned": ":violet[:material/content_cut: pruned]",
}
# The form's groups (one home for the field list), most-tuned first, so
# optimizer and learning rate are seen without scrolling.
CONFIG_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (title, tuple(field.name for field in GROUPS[title]))
    for title in ("Optimizer", "Schedule", "Network", "Data")
)
# A run stored by an earlier version may hold fields this one removed or renamed:
# the API keeps them (config_unknown) and the pages show them, apart.
UNUSED_GROUP = "Stored, not used"
UNUSED_MARK = " (not used)"


def flatten_config(config: Row) -> Row:
    """``{"augment": {"flip": True}}`` → ``{"augment.flip": True}``."""
    flat: Row = {}
    for key, value in config.items():
        if isinstance(value, dict):
            for inner, item in flatten_config(value).items():
                flat[f"{key}.{inner}"] = item
        else:
            flat[key] = value
    return flat


def format_value(field: str, value: Any) -> str:
    """A config value as a person reads it: ``50×55``, ``8, 16, 32``, ``0.001``."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if field == "image_size" and isinstance(value, list | tuple):
        return "×".join(str(v) for v in value)
    if isinstance(value, list | tuple):
        return ", ".join(format_value("", v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_groups(
    config: Row, unknown: Row | None = None
) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every field of ``config`` its network uses as (group, [(field, shown
    value)]); the stored fields the API no longer knows (``unknown``) last, in a
    group of their own."""
    flat = without_unused(flatten_config(config))
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    known: set[str] = set()
    for title, fields in CONFIG_GROUPS:
        rows = [(f, format_value(f, flat[f])) for f in fields if f in flat]
        known.update(fields)
        if rows:
            groups.append((title, rows))
    other = [(f, format_value(f, v)) for f, v in flat.items() if f not in known]
    if other:
        groups.append(("Other", other))
    if unknown:
        stored = flatten_config(unknown)
        groups.append((UNUSED_GROUP, [(f, format_value(f, v)) for f, v in stored.items()]))
    return groups


def comparable_config(run: Row) -> Row:
    """A run's config for the tables of several runs, flattened: the fields it
    trains with, plus those stored by an earlier version that nothing uses now
    (``config_unknown``), marked so, so that a difference there is seen too.
    An application run has no conv_bn knobs: beside a conv_bn run they read "—"."""
    flat = without_unused(flatten_config(run.get("config") or {}))
    unknown = flatten_config(run.get("config_unknown") or {})
    flat.update({f"{field}{UNUSED_MARK}": value for field, value in unknown.items()})
    return flat


def differing_fields(configs: Sequence[Row]) -> list[str]:
    """The flattened fields whose values are not all the same, in display order."""
    flats = [flatten_config(c) for c in configs]
    if len(flats) < 2:
        return []
    order = [f for _, fields in CONFIG_GROUPS for f in fields]
    every = {f for flat in flats for f in flat}
    ordered = [f for f in order if f in every] + sorted(every.difference(order))
    missing = object()
    return [f for f in ordered if len({repr(flat.get(f, missing)) for flat in flats}) > 1]


def patch_changes(config: Row, patch: Row) -> list[tuple[str, str, str]]:
    """What a suggested patch changes: (field, shown value now, shown value after),
    flattened, so an ``augment`` patch names only the fields it moves."""
    now, after = flatten_config(config), flatten_config({**config, **patch})
    return [
        (field, format_value(field, now.get(field)), format_value(field, value))
        for field, value in after.items()
        if field not in now or now[field] != value
    ]


def patch_text(changes: Sequence[tuple[str, str, str]]) -> str:
    """``bn_momentum: 0.99 → 0.9``, several joined by `` · ``."""
    return " · ".join(f"{field}: {old} → {new}" for field, old, new in changes)


def fix_run_name(name: str, changes: Sequence[tuple[str, str, str]], limit: int = 200) -> str:
    """``<run name> · bn_momentum 0.9``, cut to the API's name limit."""
    suffix = " · " + ", ".join(f"{field} {new}" for field, _, new in changes)
    return name[: max(limit - len(suffix), 0)] + suffix[:limit]


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    fraction: float
    eta_s: float | None
    epoch_s: float | None
    images_per_sec: float | None


def planned_epochs(run: Row) -> int:
    """The epochs the run was started for: its config's, or for an external run
    (no config), its fit's summary's; 0 when unknown."""
    planned = run.get("config") or run.get("summary")
    epochs = planned.get("epochs") if isinstance(planned, dict) else None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else 0


def progress(run: Row, epochs: Sequence[Row]) -> Progress:
    """How far a run is; the ETA assumes the remaining epochs take the mean so far."""
    total = planned_epochs(run)
    done = int(run.get("epochs_done") or len(epochs))
    seconds = [s for s in (_finite(r.get("seconds")) for r in epochs) if s is not None]
    mean = sum(seconds) / len(seconds) if seconds else None
    remaining = max(total - done, 0)
    active = run.get("status") in ACTIVE_STATUSES
    return Progress(
        done=done,
        total=total,
        fraction=min(done / total, 1.0) if total else 0.0,
        eta_s=mean * remaining if mean is not None and active else None,
        epoch_s=seconds[-1] if seconds else None,
        images_per_sec=_finite(epochs[-1].get("images_per_sec")) if epochs else None,
    )


def best(epochs: Iterable[Row]) -> Row:
    """Lowest val_loss and highest val_accuracy, with the epochs they came at."""
    found: Row = {"val_loss": None, "val_loss_epoch": None}
    found.update({"val_accuracy": None, "val_accuracy_epoch": None})
    for row in epochs:
        loss, acc = _finite(row.get("val_loss")), _finite(row.get("val_accuracy"))
        if loss is not None and (found["val_loss"] is None or loss < found["val_loss"]):
            found["val_loss"], found["val_loss_epoch"] = loss, row.get("epoch")
        if acc is not None and (found["val_accuracy"] is None or acc > found["val_accuracy"]):
            found["val_accuracy"], found["val_accuracy_epoch"] = acc, row.get("epoch")
    return found


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def metrics_csv(epochs: Sequence[Row]) -> str:
    """One line per epoch, every metric the run recorded as a column."""
    columns = ["epoch"]
    for row in epochs:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(epochs)
    return out.getvalue()


def run_labels(runs: Sequence[Row]) -> dict[str, str]:
    """Run id → its name, with a short id added where two runs share a name."""
    return unique_labels({run["id"]: run.get("name") or run["id"][:8] for run in runs})


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
