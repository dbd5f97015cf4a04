"""What a diagnosis says: findings, their severities, and their order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]
# Most severe first; within a severity, rules keep their own order.
SEVERITY_RANK: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    """One thing the run's numbers show.

    ``evidence`` quotes the run's own numbers; ``suggestion`` is a TrainConfig
    patch (top-level fields; ``augment`` as a whole object) that a cloned run
    can apply, empty when the fix is not a knob (the data, say).
    ``keras_code`` is the same change as code in a Keras script (the only form
    an external run can use: the server cannot re-run the user's script);
    None when there is no change to make. ``code`` names the rule.
    """

    code: str
    severity: Severity
    title: str
    evidence: str
    suggestion: dict[str, Any] = field(default_factory=dict)
    keras_code: str | None = None


def most_severe_first(findings: Iterable[Finding | None]) -> list[Finding]:
    """The findings that fired, critical first (a stable sort)."""
    return sorted(
        (finding for finding in findings if finding is not None),
        key=lambda finding: SEVERITY_RANK[finding.severity],
    )
