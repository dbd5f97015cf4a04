"""How ingest refuses an upload, and how it names entries in what it says.

Every message a user reads names the entry at fault, so names are shown
quoted and shortened: an archive may hold names thousands of characters long.
"""

from __future__ import annotations

from collections.abc import Sequence


class IngestError(ValueError):
    """Rejection of an upload; str(exc) tells the user what to fix, naming the offending entry."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code  # 400 bad archive or content, 413 over a size limit


def show(name: str, limit: int = 80) -> str:
    """A name quoted as Python would, shortened in the middle when long."""
    if len(name) > limit:
        name = f"{name[: limit - 20]}…{name[-15:]}"
    return repr(name)


def few(items: Sequence[str], limit: int = 3) -> str:
    """The first few of ``items`` (already shown), then how many more there are."""
    listed = ", ".join(items[:limit])
    if len(items) > limit:
        listed += f" and {len(items) - limit} more"
    return listed


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else many or word + 's'}"
