"""The Runs page's view as a URL: filters, sort and page, read from and written
to the query string, and turned into the API's list parameters. Pure, so a
deep link (``/?status=succeeded&sort=-best_val_loss&page=2&q=lr``) is
tested without Streamlit.

URL keys: ``status`` and ``tag`` (repeated or comma-separated: tags hold no
comma), ``dataset``, ``source``, ``q``, ``from`` and ``to`` (dates, both
included), ``sweep``, ``sort``, ``page`` (1-based). A value the page cannot
use is dropped with a note that says so, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

PAGE_SIZE = 50
# Compare overlays this many runs at most (one metrics request each).
COMPARE_MAX = 20
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted", "pruned")
SOURCES = ("worker", "keras")
# The API's sort keys (RunSort), as a person reads them; the first is the default.
SORTS = {
    "-created": "newest first",
    "created": "oldest first",
    "best_val_loss": "best val_loss, lowest first",
    "-best_val_loss": "best val_loss, highest first",
    "-best_val_accuracy": "best val_acc, highest first",
    "best_val_accuracy": "best val_acc, lowest first",
    "-duration": "longest first",
    "duration": "shortest first",
    "name": "name, A to Z",
    "-name": "name, Z to A",
}
DEFAULT_SORT = "-created"

Query = Mapping[str, str | Sequence[str]]


@dataclass(frozen=True)
class RunFilters:
    status: tuple[str, ...] = ()
    dataset: str | None = None
    tags: tuple[str, ...] = ()
    source: str | None = None
    q: str = ""
    created_from: date | None = None
    created_to: date | None = None
    sweep: str | None = None
    sort: str = DEFAULT_SORT
    page: int = 1
    # What the URL held that could not be used, in words (not part of the view).
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def filtered(self) -> bool:
        """Whether anything narrows the list (sort and page do not)."""
        return bool(
            self.status
            or self.dataset
            or self.tags
            or self.source
            or self.q
            or self.created_from
            or self.created_to
            or self.sweep
        )

    def at_page(self, page: int) -> RunFilters:
        return replace(self, page=max(page, 1))


def _values(query: Query, key: str) -> list[str]:
    raw = query.get(key)
    items = [raw] if isinstance(raw, str) else list(raw or [])
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _one(query: Query, key: str) -> str | None:
    """The last value of ``key``, whole: free text (``q``) may hold commas."""
    raw = query.get(key)
    items = [raw] if isinstance(raw, str) else list(raw or [])
    return items[-1].strip() or None if items else None


def _date(query: Query, key: str, notes: list[str]) -> date | None:
    text = _one(query, key)
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        notes.append(f"`{key}={text}` is not a date (YYYY-MM-DD): left out.")
        return None


def from_query(query: Query) -> RunFilters:
    """The view a URL's query asks for; what it holds that cannot be used is
    left out and named in ``notes``."""
    notes: list[str] = []
    statuses = _values(query, "status")
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        notes.append(f"Unknown status {', '.join(unknown)}: left out.")
    source = _one(query, "source")
    if source and source not in SOURCES:
        notes.append(f"Unknown source {source}: left out (worker or keras).")
        source = None
    sort = _one(query, "sort") or DEFAULT_SORT
    if sort not in SORTS:
        notes.append(f"Unknown sort {sort}: newest first instead.")
        sort = DEFAULT_SORT
    page_text = _one(query, "page") or "1"
    page = int(page_text) if page_text.isdigit() else 0
    if page < 1:
        notes.append(f"`page={page_text}` is not a page number: page 1 instead.")
        page = 1
    return RunFilters(
        status=tuple(dict.fromkeys(s for s in statuses if s in STATUSES)),
        dataset=_one(query, "dataset"),
        tags=tuple(dict.fromkeys(_values(query, "tag"))),
        source=source,
        q=_one(query, "q") or "",
        created_from=_date(query, "from", notes),
        created_to=_date(query, "to", notes),
        sweep=_one(query, "sweep"),
        sort=sort,
        page=page,
        notes=tuple(notes),
    )


def to_query(view: RunFilters) -> dict[str, str]:
    """The URL's query for ``view``: only what differs from the default view,
    so the plain Runs page stays ``/runs``."""
    query = {
        "status": ",".join(view.status),
        "dataset": view.dataset or "",
        "tag": ",".join(view.tags),
        "source": view.source or "",
        "q": view.q,
        "from": view.created_from.isoformat() if view.created_from else "",
        "to": view.created_to.isoformat() if view.created_to else "",
        "sweep": view.sweep or "",
        "sort": view.sort if view.sort != DEFAULT_SORT else "",
        "page": str(view.page) if view.page > 1 else "",
    }
    return {key: value for key, value in query.items() if value}


def api_params(view: RunFilters, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """``GET /api/runs``'s parameters for one page of ``view``. Dates are whole
    days in UTC: ``to`` includes its day, so the API's bound is the next one."""
    params: dict[str, Any] = {
        "limit": page_size,
        "offset": (view.page - 1) * page_size,
        "sort": view.sort,
        "status": list(view.status),
        "dataset_id": view.dataset,
        "tag": list(view.tags),
        "source": view.source,
        "q": view.q or None,
        "sweep_id": view.sweep,
    }
    if view.created_from:
        params["created_after"] = f"{view.created_from.isoformat()}T00:00:00+00:00"
    if view.created_to:
        after = view.created_to + timedelta(days=1)
        params["created_before"] = f"{after.isoformat()}T00:00:00+00:00"
    return {key: value for key, value in params.items() if value not in (None, [], "")}


def page_count(total: int, page_size: int = PAGE_SIZE) -> int:
    """Pages of ``total`` runs; one, empty, when there are none."""
    return max((total + page_size - 1) // page_size, 1)


def compare_note(selected: int) -> str | None:
    """Why Compare is not offered for ``selected`` rows; None when it is."""
    if selected > COMPARE_MAX:
        return f"Compare takes up to {COMPARE_MAX} runs: {selected} are selected."
    return None


def parse_tags(text: str) -> list[str]:
    """``"baseline, bn "`` → ``["baseline", "bn"]``: unique, in order."""
    return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
