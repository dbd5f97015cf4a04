"""SQLite's planner statistics: with them a status filter walks the sort's
index instead of sorting every matching run (Database.refresh_statistics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from backend.db import Database
from backend.run_list import RunFilters, page
from benchmarks.many_runs import seed


def _page_plan(database: Database) -> tuple[str, int]:
    """The query plan of the page query that ``page`` sends, and its row count."""
    sent: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "ORDER BY" in statement:
            sent.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", keep)
    try:
        with database.session() as session:
            found = page(session, RunFilters(statuses=("succeeded",)), limit=50)
    finally:
        event.remove(database.engine, "before_cursor_execute", keep)
    assert {run.status for run in found.items} == {"succeeded"}
    statement, parameters = sent[0]
    with database.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return " | ".join(str(row[-1]) for row in rows), len(found.items)


def test_statistics_make_a_status_filter_walk_the_created_index(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'curvelab.db'}")
    seed(database, 10_000)
    before, _ = _page_plan(database)
    # Every succeeded run found by the status index, then all of them sorted.
    assert "USING INDEX ix_runs_status" in before and "TEMP B-TREE FOR ORDER BY" in before
    database.refresh_statistics()
    after, listed = _page_plan(database)
    # Newest first along the index, until 50 match (only ties sorted by id).
    assert "SCAN runs USING INDEX ix_runs_created_at" in after, after
    assert listed == 50
    database.dispose()
