"""The benchmarks' statistics and table: right numbers, readable rows. No
timing here: figures come from `make bench`, never from a test."""

from __future__ import annotations

import numpy as np
import pytest

from backend.datasets.split import stratified_split
from benchmarks.bare_keras import split
from benchmarks.report import Row, at_least, at_most, format_table, paired_ratios, percentile


@pytest.mark.parametrize("q", [0, 5, 50, 95, 99, 100])
def test_percentile_is_numpys_linear_one(q: float) -> None:
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_refuses_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_paired_ratios_pair_samples_in_order() -> None:
    assert paired_ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
    with pytest.raises(ValueError, match="2 samples against 1"):
        paired_ratios([2.0, 3.0], [1.0])


def test_a_row_checks_its_ratio_or_its_value() -> None:
    assert Row("x", 2.0, 2.1, check=at_most(1.08)).ok is True
    assert Row("x", 2.0, 2.5, check=at_most(1.08)).ok is False
    assert Row("x", 1.0, 50.0, check=at_most(100), checks="curvelab").ok is True
    assert Row("x", 100.0, 2000.0, check=at_least(10)).ratio == 20.0
    # A ratio of paired samples wins over the quotient of the medians shown.
    assert Row("x", 2.0, 4.0, ratio_value=1.01, check=at_most(1.03)).ok is True
    assert Row("x", None, 4.0, check=at_most(1.03)).ok is None


def test_the_table_is_markdown_with_a_cell_for_everything() -> None:
    table = format_table(
        [
            Row("epoch time (s)", 4.2, 4.3, goal="≤ 1.03×", check=at_most(1.03)),
            Row("pipeline (images/s)", 1500.0, 160000.0, goal="≥ 10×", check=at_least(10)),
            Row("info only", None, 0.07),
        ]
    )
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "figure"
    assert set(lines[1]) <= {"|", "-"}
    assert "| 4.2 " in lines[2] and "1.024×" in lines[2] and "| yes |" in lines[2]
    assert "160,000" in lines[3] and "106.667×" in lines[3]
    assert lines[4].endswith("| -   |") and "| -  " in lines[4]
    assert len({len(line) for line in lines}) == 1  # columns line up


def test_the_hand_written_split_holds_out_what_curvelab_holds_out() -> None:
    # Same sizes on both sides, or the two trainings' epochs differ in steps.
    labels = np.repeat(np.arange(30), 267)
    train, val = split(labels, 0.2, seed=42)
    ours_train, ours_val = stratified_split(labels, 0.2, 42)
    assert (len(train), len(val)) == (len(ours_train), len(ours_val)) == (6420, 1590)
    assert sorted([*train, *val]) == list(range(len(labels)))
