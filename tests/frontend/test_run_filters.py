"""The Runs page's URL state (frontend/run_filters.py): a deep link read back
into a view, the view written as a short URL and as the API's parameters."""

from __future__ import annotations

from datetime import date

from frontend import run_filters as rf


def test_a_deep_link_reads_back_into_its_view() -> None:
    view = rf.from_query(
        {"status": ["succeeded", "failed"], "sort": "-best_val_loss", "page": "2", "q": "lr, bn"}
    )
    assert view.status == ("succeeded", "failed")
    assert (view.sort, view.page, view.q) == ("-best_val_loss", 2, "lr, bn")  # q keeps commas
    assert view.filtered and not view.notes
    assert rf.from_query(rf.to_query(view)) == view


def test_repeated_and_comma_separated_values_are_the_same() -> None:
    one = rf.from_query({"tag": ["a", "b"], "status": "queued,running"})
    other = rf.from_query({"tag": "a,b", "status": ["queued", "running"]})
    assert one == other and one.tags == ("a", "b")
    assert rf.to_query(one) == {"tag": "a,b", "status": "queued,running"}


def test_the_default_view_is_the_bare_url() -> None:
    assert rf.to_query(rf.from_query({})) == {}
    assert rf.to_query(rf.RunFilters(page=1, sort=rf.DEFAULT_SORT)) == {}
    assert not rf.RunFilters(sort="name", page=3).filtered


def test_what_cannot_be_used_is_left_out_and_named() -> None:
    view = rf.from_query(
        {"status": "done,failed", "sort": "up", "page": "-1", "from": "soon", "source": "tf"}
    )
    assert view == rf.RunFilters(status=("failed",))
    said = " ".join(view.notes)
    for word in ("Unknown status done", "Unknown sort up", "`page=-1`", "`from=soon`", "tf"):
        assert word in said


def test_api_parameters_of_a_page() -> None:
    view = rf.RunFilters(
        status=("succeeded",),
        tags=("x",),
        q="lr",
        created_from=date(2025, 3, 1),
        created_to=date(2025, 3, 2),
        sort="-best_val_loss",
        page=3,
    )
    assert rf.api_params(view) == {
        "limit": 50,
        "offset": 100,
        "sort": "-best_val_loss",
        "status": ["succeeded"],
        "tag": ["x"],
        "q": "lr",
        # "to" includes its day: the API's bound (exclusive) is the next midnight.
        "created_after": "2025-03-01T00:00:00+00:00",
        "created_before": "2025-03-03T00:00:00+00:00",
    }
    assert rf.api_params(rf.RunFilters()) == {"limit": 50, "offset": 0, "sort": "-created"}


def test_pages_compare_and_tags() -> None:
    assert [rf.page_count(n) for n in (0, 1, 50, 51, 10_000)] == [1, 1, 1, 2, 200]
    assert rf.compare_note(20) is None
    assert rf.compare_note(21) == "Compare takes up to 20 runs: 21 are selected."
    assert rf.parse_tags(" baseline, bn ,, baseline") == ["baseline", "bn"]
