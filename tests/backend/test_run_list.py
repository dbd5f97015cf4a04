"""GET /api/runs over the real app and both databases: paging through every
sort (each run once, in order, NULLs last, runs added between pages), each
filter and their combination with the right total, the refusals, and the
sort columns read through their indexes."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from backend import run_list
from backend.api.schemas import RunSort
from backend.db import Database, Run, RunTag, Sweep, new_id
from tests.conftest import BOTH_DATABASES

pytestmark = BOTH_DATABASES

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
# Distinct first letters: every collation orders them alike.
NAMES = ("alpha", "bravo", "charlie", "delta", "echo")
SORT_KEYS = {
    "created": "created_at",
    "best_val_loss": "best_val_loss",
    "best_val_accuracy": "best_val_accuracy",
    "duration": "duration_s",
    "name": "name",
}
AddRuns = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def add_runs(database: Database, make_dataset_row) -> AddRuns:
    """Insert ``count`` runs whose sort values repeat (ties) and are missing
    for some (NULLs); returns each as the columns the sorts read."""
    dataset_id = make_dataset_row()
    serial = itertools.count()

    def add(count: int, **fixed: Any) -> list[dict[str, Any]]:
        made = []
        with database.session() as session:
            for _ in range(count):
                n = next(serial)
                columns: dict[str, Any] = {
                    "id": new_id(),
                    "name": NAMES[n % len(NAMES)],
                    "dataset_id": dataset_id,
                    "config": {},
                    "status": "succeeded",
                    # Three runs a second apart share each instant.
                    "created_at": T0 + timedelta(seconds=n // 3),
                    "best_val_loss": None if n % 7 == 3 else round(0.1 * (n % 11), 1),
                    "best_val_accuracy": None if n % 5 == 0 else round(0.05 * (n % 9), 2),
                    "duration_s": None if n % 4 == 1 else float(n % 6),
                } | fixed
                session.add(Run(**columns))
                made.append(columns)
            session.commit()
        return made

    return add


def expected_order(rows: list[dict[str, Any]], sort: str) -> list[str]:
    column = SORT_KEYS[sort.removeprefix("-")]
    descending = sort.startswith("-")
    valued = [r for r in rows if r[column] is not None]
    missing = [r for r in rows if r[column] is None]
    valued.sort(key=lambda r: (r[column], r["id"]), reverse=descending)
    missing.sort(key=lambda r: r["id"], reverse=descending)
    return [r["id"] for r in valued + missing]


def pages(api: TestClient, **params: Any) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        reply = api.get("/api/runs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        yield body
        cursor = body["next"]
        if cursor is None:
            return


@pytest.mark.parametrize("sort", get_args(RunSort))
def test_paging_through_every_sort_gives_each_run_once_in_order(
    api: TestClient, add_runs: AddRuns, sort: str
) -> None:
    made = add_runs(125)
    seen: list[str] = []
    for body in pages(api, sort=sort, limit=9):
        assert body["total"] == 125
        assert len(body["items"]) == 9 or body["next"] is None
        seen += [run["id"] for run in body["items"]]
    assert seen == expected_order(made, sort)

    # The same pages by offset, as a jump to page n reads them.
    for start in (0, 9, 117, 124, 125, 300):
        reply = api.get("/api/runs", params={"sort": sort, "limit": 9, "offset": start})
        assert [run["id"] for run in reply.json()["items"]] == seen[start : start + 9]


@pytest.mark.parametrize("sort", ["-created", "best_val_loss", "-best_val_loss", "name"])
def test_runs_added_between_pages_neither_repeat_nor_skip_one(
    api: TestClient, add_runs: AddRuns, sort: str
) -> None:
    made = add_runs(120)
    walk = pages(api, sort=sort, limit=25)
    seen = [run["id"] for run in next(walk)["items"]]
    seen += [run["id"] for run in next(walk)["items"]]
    # Newer runs, with values on both sides of where the pages stand, and without.
    later = add_runs(30, created_at=T0 + timedelta(days=1))
    for body in walk:
        seen += [run["id"] for run in body["items"]]
    assert len(seen) == len(set(seen))
    assert set(seen) >= {run["id"] for run in made}
    # What it did show is in the order of all of them.
    everything = expected_order(made + later, sort)
    assert seen == [run_id for run_id in everything if run_id in set(seen)]


def test_each_filter_and_all_of_them_together(
    api: TestClient, add_runs: AddRuns, database: Database, make_dataset_row
) -> None:
    add_runs(20)
    other = make_dataset_row()
    sweep_id = new_id()
    with database.session() as session:
        session.add(
            Sweep(
                id=sweep_id,
                name="s",
                dataset_id=other,
                config={},
                space={},
                method="grid",
                max_runs=2,
                parallel=1,
                metric="val_loss",
                direction="minimize",
                options={},
            )
        )
        session.commit()
    special = add_runs(1, name="Fast_100% BN", dataset_id=other, status="failed")[0]
    swept = add_runs(2, dataset_id=other, status="running", sweep_id=sweep_id)
    external = add_runs(1, source="keras", notes="Tried a Higher LR", status="interrupted")[0]
    early = add_runs(1, created_at=T0 - timedelta(days=3), status="queued")[0]
    with database.session() as session:
        session.add_all(
            [
                RunTag(run_id=special["id"], tag="bn"),
                RunTag(run_id=special["id"], tag="keep"),
                RunTag(run_id=swept[0]["id"], tag="keep"),
                RunTag(run_id=external["id"], tag="Baseline"),
            ]
        )
        session.commit()

    def ids(**params: Any) -> tuple[set[str], int]:
        reply = api.get("/api/runs", params={"limit": 200, **params})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        return {run["id"] for run in body["items"]}, body["total"]

    def exactly(*runs: dict[str, Any]) -> tuple[set[str], int]:
        return {run["id"] for run in runs}, len(runs)

    assert ids()[1] == 25
    assert ids(status="failed") == exactly(special)
    assert ids(status=["failed", "interrupted"]) == exactly(special, external)
    assert ids(dataset_id=other) == exactly(special, *swept)
    assert ids(sweep_id=sweep_id) == exactly(*swept)
    assert ids(source="keras") == exactly(external)
    assert ids(tag="keep") == exactly(special, swept[0])
    assert ids(tag=["keep", "bn"]) == exactly(special)  # all of them
    assert ids(tag="baseline") == exactly()  # a tag is matched as it is written
    assert ids(q="higher lr") == exactly(external)  # notes, any case
    assert ids(q="baseLINE") == exactly(external)  # a tag
    assert ids(q="100%") == exactly(special)  # the name, LIKE's wildcards as text
    assert ids(q="t_1") == exactly(special)
    assert ids(q="_") == exactly(special)
    assert ids(q="%") == exactly(special)
    assert ids(created_before=T0.isoformat()) == exactly(early)
    assert ids(created_after=(T0 - timedelta(days=1)).isoformat())[1] == 24
    # A naive time is UTC; another zone is converted.
    assert ids(created_before="2026-12-01T12:00:00") == exactly(early)
    assert ids(created_before="2026-12-01T13:00:00+01:00") == exactly(early)
    together = ids(status=["failed", "running"], dataset_id=other, tag="keep", q="BN", sort="name")
    assert together == exactly(special)
    # Runs that match on a page of one, with the total of all of them.
    reply = api.get("/api/runs", params={"dataset_id": other, "limit": 1}).json()
    assert len(reply["items"]) == 1 and reply["total"] == 3 and reply["next"]


def test_a_cursor_this_api_did_not_give_is_refused(api: TestClient, add_runs: AddRuns) -> None:
    add_runs(5)
    first = api.get("/api/runs", params={"limit": 2, "sort": "best_val_loss"}).json()
    forged = [
        "not a cursor!",
        "e30",  # {}
        base64.urlsafe_b64encode(b'["best_val_loss",0,"x","ab"]').decode(),
        base64.urlsafe_b64encode(b'["best_val_loss",0,0.5,"a\\u0000b"]').decode(),
        base64.urlsafe_b64encode(b'["best_val_loss",0,NaN,"ab"]').decode(),
        base64.urlsafe_b64encode(b'["-created",0,"2026-12-01T12:00:00","ab"]').decode(),
        base64.urlsafe_b64encode(b'["name",1,null,"ab"]').decode(),  # names are never null
    ]
    for cursor in forged:
        reply = api.get("/api/runs", params={"cursor": cursor, "sort": "best_val_loss"})
        assert reply.status_code == 422, (cursor, reply.text)
        assert reply.json()["detail"] == run_list.BAD_CURSOR
    # A real one, for another sort.
    reply = api.get("/api/runs", params={"cursor": first["next"], "sort": "-created"})
    assert (reply.status_code, reply.json()["detail"]) == (422, run_list.BAD_CURSOR)
    both = api.get("/api/runs", params={"cursor": first["next"], "offset": 2})
    assert both.status_code == 422
    assert both.json()["detail"].startswith("send cursor or offset, not both")
    for params in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"sort": "size"}):
        reply = api.get("/api/runs", params=params)
        assert reply.status_code == 422, params
        assert next(iter(params)) in reply.json()["detail"]


@pytest.mark.parametrize(
    "query",
    [
        "dataset_id=%00",
        "sweep_id=nothex",
        "tag=a%00b",
        "tag=a,b",
        "q=%00",
        "q=%ED%A0%80",
        "created_after=0001-01-01T00:00:00%2B01:00",
        "created_before=9999-12-31T23:59:59-01:00",
    ],
)
def test_odd_queries_match_nothing_and_are_never_server_errors(
    api: TestClient, add_runs: AddRuns, query: str
) -> None:
    add_runs(3)
    reply = api.get(f"/api/runs?{query}")
    assert reply.status_code == 200, reply.text
    # The far ends of time hold every run; the rest match none.
    assert reply.json()["total"] == (3 if query.startswith("created_") else 0)


@pytest.mark.parametrize("sort", ["-created", "best_val_loss", "-best_val_accuracy", "duration"])
def test_the_sort_columns_are_read_through_their_indexes(
    database: Database, add_runs: AddRuns, sort: str
) -> None:
    add_runs(30)
    seen: list[tuple[str, Any]] = []

    def note(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if statement.lstrip().upper().startswith("SELECT RUNS."):
            seen.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", note)
    try:
        with database.session() as session:
            run_list.page(session, run_list.RunFilters(), sort, limit=5)
    finally:
        event.remove(database.engine, "before_cursor_execute", note)
    index = f"ix_runs_{SORT_KEYS[sort.removeprefix('-')]}"
    statement, parameters = seen[0]  # the part of runs with a value
    with database.engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        if database.engine.dialect.name == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
        else:
            # A table this small is scanned unless scans are priced out.
            cursor.execute("SET enable_seqscan = off")
            cursor.execute(f"EXPLAIN {statement}", parameters)
            plan = " ".join(row[0] for row in cursor.fetchall())
            cursor.execute("RESET enable_seqscan")
    assert index in plan, plan
    assert "Seq Scan" not in plan, plan


def test_each_row_carries_its_summary(api: TestClient, add_runs: AddRuns) -> None:
    made = add_runs(2)[1]
    run = next(r for r in api.get("/api/runs").json()["items"] if r["id"] == made["id"])
    for field in ("best_val_loss", "best_val_accuracy", "duration_s"):
        assert run[field] == made[field]
    assert run["tags"] == [] and run["notes"] == "" and run["sweep_id"] is None
    assert json.loads(json.dumps(run))  # every field is plain JSON
