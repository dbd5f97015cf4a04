"""PlainText: a user-chosen name, any printable text. Its own module because
both REST contracts use it (backend.api.schemas and backend.fit_summary, which
schemas imports for RunPublic.summary)."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator


def _no_control_characters(value: str) -> str:
    # A name is one line of text; a NUL would also make PostgreSQL refuse it,
    # and a lone surrogate (JSON allows "\ud800") cannot be stored at all.
    if any(unicodedata.category(char) in {"Cc", "Cs"} for char in value):
        raise ValueError("must be printable text, without control characters")
    return value


PlainText = Annotated[str, AfterValidator(_no_control_characters)]
"""A user-chosen name: any printable text."""
