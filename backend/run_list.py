"""The runs list: one page of runs, filtered, sorted and counted in SQL.

GET /api/runs reads the runs table (its summary columns, which
backend.run_summary keeps) and, to filter by tag or search, run_tags: a page
never reads a metric row, however many runs there are.

A page starts after a cursor (keyset: the sort key and id of the last row
shown, so rows added between pages neither repeat nor skip one) or at an
offset (a jump to page n). Ties are broken by id. Runs without a value of
the sort key (no val_loss yet, say) come after all the others in either
direction: each sort reads two parts, rows with a value by the indexed
column, then rows without by id, so that each part walks an index on every
database (``ORDER BY x DESC NULLS LAST`` cannot use PostgreSQL's index on x,
which holds NULLs at the other end).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from backend.db import Run, RunTag

BAD_CURSOR = "cursor is not one this API gave; start again without it"

SORT_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "created": Run.created_at,
    "best_val_loss": Run.best_val_loss,
    "best_val_accuracy": Run.best_val_accuracy,
    "duration": Run.duration_s,
    "name": Run.name,
}
# The columns a run may lack a value of: read in two parts (see above).
NULLABLE = frozenset({"best_val_loss", "best_val_accuracy", "duration"})
DEFAULT_SORT = "-created"

# As backend.api.deps.is_server_id: every run id the server holds is hex.
_RUN_ID = re.compile(r"[0-9a-f]{1,64}")
# What no stored tag can hold (backend.api.schemas.Tag): a filter with it matches nothing.
_NOT_IN_A_TAG = re.compile(r"[\x00-\x1f,]")


class BadCursor(ValueError):
    def __init__(self) -> None:
        super().__init__(BAD_CURSOR)


@dataclass(frozen=True)
class RunFilters:
    """What a run must match; empty matches every run. Ids are the caller's
    to check (an id the server could not have made is never sent here)."""

    statuses: tuple[str, ...] = ()
    dataset_id: str | None = None
    tags: tuple[str, ...] = ()  # all of them
    source: str | None = None
    q: str | None = None  # a case-insensitive substring of the name, notes or a tag
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    sweep_id: str | None = None

    def matches_nothing(self) -> bool:
        """True when no stored run can match (a NUL, which PostgreSQL would
        refuse rather than miss, or a tag no tag can be)."""
        if any(_NOT_IN_A_TAG.search(tag) for tag in self.tags):
            return True
        return self.q is not None and "\x00" in self.q


@dataclass
class Page:
    items: list[Run]
    total: int
    next: str | None


@dataclass(frozen=True)
class _After:
    """Where the previous page ended: its last row's part, sort value and id."""

    nulls: bool
    value: Any
    id: str


def page(
    session: Session,
    filters: RunFilters,
    sort: str = DEFAULT_SORT,
    limit: int = 50,
    cursor: str | None = None,
    offset: int = 0,
) -> Page:
    """The runs after ``cursor`` (or from ``offset``), at most ``limit``, in
    ``sort`` order; ``total`` counts every run that matches. BadCursor for a
    cursor this function did not give for this sort."""
    if sort.removeprefix("-") not in SORT_COLUMNS or limit < 1 or offset < 0:
        raise ValueError(f"not a page: sort {sort!r}, limit {limit}, offset {offset}")
    after = decode_cursor(cursor, sort) if cursor is not None else None
    if filters.matches_nothing():
        return Page([], 0, None)
    where = _conditions(filters)
    total = session.scalar(select(func.count()).select_from(Run).where(*where)) or 0
    name, descending = sort.removeprefix("-"), sort.startswith("-")
    column = SORT_COLUMNS[name]
    parts = (False, True) if name in NULLABLE else (False,)
    rows: list[Run] = []
    skip = offset
    for nulls in parts:
        if after is not None and after.nulls and not nulls:
            continue  # the previous page ended among the runs without a value
        query = _part(where, column, nulls, descending, name in NULLABLE)
        if after is not None and after.nulls == nulls:
            query = query.where(_past(column, nulls, descending, after))
        found = list(session.scalars(query.offset(skip).limit(limit + 1 - len(rows))))
        if skip and not found and not nulls:  # the offset lies past this part
            skip -= session.scalar(_count_part(where, column)) or 0
        else:
            skip = 0
        rows += found
        if len(rows) > limit:
            break
    following = None
    if len(rows) > limit:
        last = rows[limit - 1]
        following = encode_cursor(sort, _After(_lacks(last, name), _value(last, name), last.id))
    return Page(rows[:limit], total, following)


def _conditions(filters: RunFilters) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if filters.statuses:
        where.append(Run.status.in_(filters.statuses))
    if filters.dataset_id is not None:
        where.append(Run.dataset_id == filters.dataset_id)
    if filters.source is not None:
        where.append(Run.source == filters.source)
    if filters.sweep_id is not None:
        where.append(Run.sweep_id == filters.sweep_id)
    for tag in dict.fromkeys(filters.tags):
        # An EXISTS on run_tags' primary key (run_id, tag): one lookup a run.
        where.append(exists().where(RunTag.run_id == Run.id, RunTag.tag == tag))
    if filters.q:
        pattern = f"%{_escape_like(filters.q)}%"
        where.append(
            or_(
                Run.name.ilike(pattern, escape="\\"),
                Run.notes.ilike(pattern, escape="\\"),
                exists().where(RunTag.run_id == Run.id, RunTag.tag.ilike(pattern, escape="\\")),
            )
        )
    if filters.created_after is not None:
        where.append(Run.created_at >= _utc(filters.created_after))
    if filters.created_before is not None:
        where.append(Run.created_at < _utc(filters.created_before))
    return where


def _part(
    where: list[ColumnElement[bool]],
    column: InstrumentedAttribute[Any],
    nulls: bool,
    descending: bool,
    nullable: bool,
) -> Select[Run]:
    query = select(Run).where(*where)
    if nulls:
        query = query.where(column.is_(None))
        keys: list[Any] = [Run.id]
    else:
        if nullable:
            query = query.where(column.is_not(None))
        keys = [column, Run.id]
    return query.order_by(*(key.desc() if descending else key.asc() for key in keys))


def _count_part(
    where: list[ColumnElement[bool]], column: InstrumentedAttribute[Any]
) -> Select[int]:
    return select(func.count()).select_from(Run).where(*where, column.is_not(None))


def _past(
    column: InstrumentedAttribute[Any], nulls: bool, descending: bool, after: _After
) -> ColumnElement[bool]:
    """Rows after ``after`` in the part's order. The first bound alone is an
    index range; the OR then drops the ties up to the last row's id."""
    if nulls:
        return Run.id < after.id if descending else Run.id > after.id
    if descending:
        return (column <= after.value) & or_(column < after.value, Run.id < after.id)
    return (column >= after.value) & or_(column > after.value, Run.id > after.id)


def _lacks(run: Run, name: str) -> bool:
    return name in NULLABLE and getattr(run, SORT_COLUMNS[name].key) is None


def _value(run: Run, name: str) -> Any:
    return getattr(run, SORT_COLUMNS[name].key)


def encode_cursor(sort: str, after: _After) -> str:
    value = after.value.isoformat() if isinstance(after.value, datetime) else after.value
    raw = json.dumps([sort, int(after.nulls), value, after.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> _After:
    """The position a cursor of ``encode_cursor`` holds; BadCursor for
    anything else, or one given for another sort."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        fields = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadCursor() from None
    if not (isinstance(fields, list) and len(fields) == 4 and fields[0] == sort):
        raise BadCursor()
    _, nulls, value, run_id = fields
    name = sort.removeprefix("-")
    if nulls not in (0, 1) or isinstance(nulls, bool) or (nulls and name not in NULLABLE):
        raise BadCursor()
    if not (isinstance(run_id, str) and _RUN_ID.fullmatch(run_id)):
        raise BadCursor()
    if nulls:
        if value is not None:
            raise BadCursor()
        return _After(True, None, run_id)
    return _After(False, _sort_value(name, value), run_id)


def _sort_value(name: str, value: Any) -> Any:
    if name == "created":
        if not isinstance(value, str):
            raise BadCursor()
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            raise BadCursor() from None
        if stamp.tzinfo is None:
            raise BadCursor()
        return _utc(stamp)
    if name == "name":
        if not isinstance(value, str) or len(value) > 200 or "\x00" in value:
            raise BadCursor()
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadCursor()
    return float(value)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _utc(stamp: datetime) -> datetime:
    """In UTC, as the column holds it (SQLite keeps no zone); naive: UTC."""
    if stamp.tzinfo is None:
        return stamp.replace(tzinfo=UTC)
    try:
        return stamp.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        return (
            datetime.min.replace(tzinfo=UTC)
            if stamp.year == 1
            else datetime.max.replace(tzinfo=UTC)
        )
