"""Selectbox labels that name each option once.

Streamlit 1.67 sends the chosen *label* back and maps it to its option, the
last one winning when labels repeat (``create_mappings`` in
streamlit/elements/lib/options_selector_utils.py): of two datasets both called
"letters", picking either would select the second.
"""

from __future__ import annotations


def unique_labels(labels: dict[str, str]) -> dict[str, str]:
    """``{id: label}`` with a short id added to every label that repeats."""
    seen: dict[str, int] = {}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    return {
        key: f"{label} · {key[:8]}" if seen[label] > 1 else label for key, label in labels.items()
    }
