"""Tidying up over the real app, Redis and both databases: summaries kept by
each change to a run's epochs, PATCH (name, tags, notes), deleting runs
(rows, stream, files; active ones cancelled first) and datasets with their
runs, and a delete the database refuses, which leaves everything as it was."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import func, select, text

from backend import artifacts, evaluations, events, run_deletion, runs
from backend.db import (
    BatchMetrics,
    Database,
    Dataset,
    EpochMetrics,
    Evaluation,
    Run,
    RunTag,
    Sweep,
    new_id,
    utcnow,
)
from backend.settings import Settings
from backend.synthetic import write_character_zip
from backend.train_config import TrainConfig
from tests.backend.test_external_runs import create as create_external
from tests.conftest import BOTH_DATABASES
from worker.training.fence import Fence

pytestmark = BOTH_DATABASES

TINY = TrainConfig(image_size=(16, 16), filters=[4], epochs=4)
MakeRun = Callable[..., str]


@pytest.fixture
def dataset_id(make_dataset_row) -> str:
    return str(make_dataset_row())


@pytest.fixture
def make_run(database: Database, redis_client: Redis, settings: Settings, dataset_id: str):
    """A worker's run of the dataset: queued, running or finished with
    ``epochs`` recorded (and published), batch points, an evaluation and files."""

    def make(status: str = "succeeded", epochs: int = 2, of: str | None = None) -> str:
        with database.session() as session:
            dataset = session.get(Dataset, of or dataset_id)
            assert dataset is not None
            run_id = runs.create_run(session, dataset, TINY, None).id
            if status == "queued":
                return run_id
            runs.mark_running(session, redis_client, run_id)
            for epoch in range(1, epochs + 1):
                values = {"loss": 1.0 / epoch, "val_loss": 1.5 / epoch}
                batches = [(epoch * 10, epoch - 0.5, {"loss": 1.0 / epoch})]
                assert runs.record_epoch(session, run_id, epoch, values, batches)
                events.publish(redis_client, run_id, events.epoch_event(epoch, values))
            if status != "running":
                runs.finish(session, redis_client, run_id, status)
                evaluations.store(session, run_id, "final", epochs, {"accuracy": 0.5})
        folder = artifacts.run_dir(settings.runs_dir, run_id)
        (folder / artifacts.CHECKPOINTS).mkdir(parents=True)
        (folder / artifacts.MODEL_FILE).write_bytes(b"model")
        (folder / artifacts.CHECKPOINTS / "epoch-0001.keras").write_bytes(b"checkpoint")
        return run_id

    return make


def rows_of(database: Database, run_id: str) -> dict[str, int]:
    keys = (Run.id, EpochMetrics.run_id, BatchMetrics.run_id, Evaluation.run_id, RunTag.run_id)
    with database.session() as session:
        return {
            str(key.class_.__tablename__): session.scalar(
                select(func.count()).select_from(key.class_).where(key == run_id)
            )
            or 0
            for key in keys
        }


def files_of(settings: Settings, run_id: str) -> list[str]:
    folder = artifacts.run_dir(settings.runs_dir, run_id)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def trash(settings: Settings) -> list[Path]:
    return list(settings.runs_dir.glob(f"{artifacts.TRASH_PREFIX}*"))


# -- summaries ---------------------------------------------------------------


def summary(api: TestClient, run_id: str) -> dict[str, Any]:
    run = api.get(f"/api/runs/{run_id}").json()
    fields = ("best_val_loss", "best_val_loss_epoch", "best_val_accuracy")
    return {f: run[f] for f in (*fields, "best_val_accuracy_epoch", "duration_s", "images_per_sec")}


def epoch_values(val_loss: float | None, val_accuracy: float, seconds: float) -> dict[str, Any]:
    return {
        "loss": 1.0,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "seconds": seconds,
        "images_per_sec": 100 * seconds,
    }


def test_the_summary_follows_recorded_and_rewound_epochs(
    api: TestClient, database: Database, make_run: MakeRun
) -> None:
    run_id = make_run("queued")
    with database.session() as session:
        attempt = runs.mark_running(session, None, run_id).attempt  # type: ignore[union-attr]
        for epoch, values in enumerate(
            [epoch_values(1.0, 0.2, 2), epoch_values(0.5, 0.6, 3), epoch_values(None, 0.6, 4)],
            start=1,
        ):
            assert runs.record_epoch(session, run_id, epoch, values, [], attempt=attempt)
    # A diverged epoch (null val_loss) is no best; a tie keeps the earlier epoch.
    assert summary(api, run_id) == {
        "best_val_loss": 0.5,
        "best_val_loss_epoch": 2,
        "best_val_accuracy": 0.6,
        "best_val_accuracy_epoch": 2,
        "duration_s": 9.0,
        "images_per_sec": 300.0,
    }
    with database.session() as session:
        # The worker resumes from epoch 1's checkpoint: the best epoch is forgotten.
        assert runs.rewind(session, None, run_id, 1, attempt=attempt)
    assert summary(api, run_id) == {
        "best_val_loss": 1.0,
        "best_val_loss_epoch": 1,
        "best_val_accuracy": 0.2,
        "best_val_accuracy_epoch": 1,
        "duration_s": 2.0,
        "images_per_sec": 200.0,
    }
    with database.session() as session:
        assert runs.record_epoch(session, run_id, 2, epoch_values(0.8, 0.3, 1), [], attempt)
    assert summary(api, run_id)["best_val_loss"] == 0.8
    listed = api.get("/api/runs", params={"sort": "best_val_loss"}).json()["items"]
    assert listed[0]["best_val_loss_epoch"] == 2
    with database.session() as session:
        assert runs.rewind(session, None, run_id, 0, attempt=attempt)  # starts over
    assert set(summary(api, run_id).values()) == {None}


def test_the_summary_follows_an_external_runs_epochs(api: TestClient, database: Database) -> None:
    run_id = new_id()
    assert create_external(api, run_id).status_code == 201
    with database.session() as session:
        rows = [(1, epoch_values(0.9, 0.4, 2)), (2, epoch_values(0.7, 0.5, 2))]
        assert runs.append_epochs(session, run_id, rows) == [1, 2]
    assert summary(api, run_id)["best_val_loss"] == 0.7
    # Re-sent epoch 2 (its first values stay) and a new third one.
    sent = {"epochs": [{"epoch": 2, "values": {"val_loss": 0.1}}, {"epoch": 3, "values": {}}]}
    assert api.post(f"/api/runs/{run_id}/epochs", json=sent).json()["stored"] == 1
    assert summary(api, run_id) == {
        "best_val_loss": 0.7,
        "best_val_loss_epoch": 2,
        "best_val_accuracy": 0.5,
        "best_val_accuracy_epoch": 2,
        "duration_s": 4.0,
        "images_per_sec": 200.0,
    }


# -- PATCH -------------------------------------------------------------------


def test_a_run_is_renamed_tagged_and_annotated(
    api: TestClient, make_run: MakeRun, database: Database
) -> None:
    run_id, other = make_run(), make_run()
    reply = api.patch(
        f"/api/runs/{run_id}",
        json={"name": "  BN fix  ", "tags": ["bn", " momentum ", "bn"], "notes": "Lower LR\nnext"},
    )
    assert reply.status_code == 200, reply.text
    run = reply.json()
    assert (run["name"], run["tags"], run["notes"]) == (
        "BN fix",
        ["bn", "momentum"],
        "Lower LR\nnext",
    )
    assert run["status"] == "succeeded" and run["epochs_done"] == 2  # the rest as it was

    def found(**params: Any) -> list[str]:
        return [r["id"] for r in api.get("/api/runs", params=params).json()["items"]]

    assert found(tag="momentum") == [run_id]
    assert found(q="MOMENT") == found(q="lower lr") == found(q="bn f") == [run_id]
    # Tags replace the run's: one kept, one dropped, one new; other fields stay.
    reply = api.patch(f"/api/runs/{run_id}", json={"tags": ["momentum", "keep"]})
    assert reply.json()["tags"] == ["keep", "momentum"] and reply.json()["name"] == "BN fix"
    assert found(tag="bn") == []
    assert api.patch(f"/api/runs/{run_id}", json={}).json()["tags"] == ["keep", "momentum"]
    cleared = api.patch(f"/api/runs/{run_id}", json={"tags": [], "notes": ""}).json()
    assert (cleared["tags"], cleared["notes"]) == ([], "")
    assert rows_of(database, run_id)["run_tags"] == 0
    assert api.get(f"/api/runs/{other}").json()["tags"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tags": ["a,b"]}, "tags.0"),
        ({"tags": ["  "]}, "tags.0"),
        ({"tags": ["x" * 65]}, "tags.0"),
        ({"tags": ["tab\there"]}, "tags.0"),
        ({"tags": [f"t{n}" for n in range(51)]}, "tags"),
        ({"tags": "bn"}, "tags"),
        ({"name": "   "}, "name: must not be blank"),
        ({"name": "a\x00b"}, "name"),
        ({"notes": "a\x00b"}, "notes: must not contain a NUL character"),
        ({"notes": "x" * 20_001}, "notes"),
        ({"status": "succeeded"}, "status"),
    ],
)
def test_a_bad_patch_is_a_422_naming_the_field(
    api: TestClient, make_run: MakeRun, body: dict[str, Any], field: str
) -> None:
    run_id = make_run()
    before = api.get(f"/api/runs/{run_id}").json()
    reply = api.patch(f"/api/runs/{run_id}", json=body)
    assert reply.status_code == 422, reply.text
    assert field in reply.json()["detail"], reply.json()
    assert api.get(f"/api/runs/{run_id}").json() == before


def test_an_external_run_is_patched_and_a_missing_one_is_a_404(api: TestClient) -> None:
    run_id = new_id()
    create_external(api, run_id)
    reply = api.patch(f"/api/runs/{run_id}", json={"name": "my fit", "tags": ["laptop"]})
    assert (reply.status_code, reply.json()["name"], reply.json()["tags"]) == (
        200,
        "my fit",
        ["laptop"],
    )
    assert api.patch(f"/api/runs/{new_id()}", json={"name": "x"}).status_code == 404
    assert api.patch("/api/runs/not-an-id", json={"name": "x"}).status_code == 404


# -- deleting runs -----------------------------------------------------------


def test_a_deleted_run_leaves_no_rows_stream_or_files(
    api: TestClient, make_run: MakeRun, database: Database, redis_client: Redis, settings: Settings
) -> None:
    run_id, kept = make_run(), make_run()
    api.patch(f"/api/runs/{run_id}", json={"tags": ["doomed"]})
    redis_client.set(events.run_memory_key(run_id), "123")
    assert set(rows_of(database, run_id).values()) == {1, 2}
    assert redis_client.exists(events.stream_key(run_id))
    assert files_of(settings, run_id)

    assert api.delete(f"/api/runs/{run_id}").status_code == 204
    assert set(rows_of(database, run_id).values()) == {0}
    assert redis_client.exists(events.stream_key(run_id), events.run_memory_key(run_id)) == 0
    assert not artifacts.run_dir(settings.runs_dir, run_id).exists() and trash(settings) == []
    assert api.get(f"/api/runs/{run_id}").status_code == 404
    assert api.delete(f"/api/runs/{run_id}").status_code == 404
    # The other run is untouched.
    assert rows_of(database, kept) == {
        "runs": 1,
        "epoch_metrics": 2,
        "batch_metrics": 2,
        "evaluations": 1,
        "run_tags": 0,
    }
    assert redis_client.exists(events.stream_key(kept)) and files_of(settings, kept)


def test_many_runs_are_deleted_at_once_active_ones_cancelled_first(
    api: TestClient,
    make_run: MakeRun,
    database: Database,
    redis_client: Redis,
    settings: Settings,
    dataset_id: str,
) -> None:
    finished = make_run()
    queued = api.post("/api/runs", json={"dataset_id": dataset_id, "config": {}}).json()["id"]
    running = make_run("running")
    with database.session() as session:
        attempt = session.get(Run, running).attempt  # type: ignore[union-attr]
    redis_client.set(events.lease_key(running), "worker-1", ex=60)
    external = new_id()
    create_external(api, external)
    model = artifacts.run_dir(settings.runs_dir, external) / artifacts.MODEL_FILE
    model.parent.mkdir(parents=True)
    model.write_bytes(b"their model")

    asked = [finished, queued, "f" * 32, running, "not an id", finished, external]
    reply = api.post("/api/runs/delete", json={"ids": asked})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "deleted": [finished, queued, running, external],
        "missing": ["f" * 32, "not an id"],
    }
    for run_id in (finished, queued, running, external):
        assert set(rows_of(database, run_id).values()) == {0}
        assert not artifacts.run_dir(settings.runs_dir, run_id).exists()
        assert not redis_client.exists(events.stream_key(run_id))
    assert trash(settings) == []
    assert api.get("/api/runs").json()["total"] == 0
    # The running run's worker is told to stop, and its lease is gone.
    assert runs.cancel_requested(redis_client, running)
    assert not redis_client.exists(events.lease_key(running))

    # That worker, still training, is refused its next epoch and stops cleanly,
    # as the worker that takes the queued run's message finds nothing to do.
    with database.session() as session:
        assert not runs.record_epoch(session, running, 3, {"loss": 1.0}, [], attempt=attempt)
        assert not runs.rewind(session, None, running, 1, attempt=attempt)
        assert not runs.finish(session, None, running, "cancelled", attempt=attempt)
        assert runs.mark_running(session, redis_client, queued) is None
    fence = Fence(database, running, attempt)
    assert not fence.holds() and fence.lost.is_set()
    assert not artifacts.run_dir(settings.runs_dir, running).exists()


@contextmanager
def refused_deletes(db: Database) -> Iterator[None]:
    """A trigger that makes the database refuse every delete of a run, while in use."""
    sqlite = db.engine.dialect.name == "sqlite"
    with db.engine.begin() as connection:
        if sqlite:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE DELETE ON runs "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE DELETE ON runs "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
    try:
        yield
    finally:
        with db.engine.begin() as connection:
            connection.execute(text("DROP TRIGGER refuse" + ("" if sqlite else " ON runs")))


def test_a_delete_the_database_refuses_leaves_everything_as_it_was(
    api: TestClient,
    make_run: MakeRun,
    database: Database,
    redis_client: Redis,
    settings: Settings,
    dataset_id: str,
) -> None:
    run_ids = [make_run(), make_run()]
    before = {run_id: (rows_of(database, run_id), files_of(settings, run_id)) for run_id in run_ids}
    streams = [redis_client.xlen(events.stream_key(run_id)) for run_id in run_ids]
    with refused_deletes(database):
        reply = api.post("/api/runs/delete", json={"ids": run_ids})
        assert reply.status_code == 503
        assert reply.json()["detail"] == (
            "the database refused the delete; nothing was deleted, try again"
        )
        assert api.delete(f"/api/runs/{run_ids[0]}").status_code == 503
        assert api.delete(f"/api/datasets/{dataset_id}?delete_runs=true").status_code == 503
    after = {run_id: (rows_of(database, run_id), files_of(settings, run_id)) for run_id in run_ids}
    assert after == before and trash(settings) == []
    assert [redis_client.xlen(events.stream_key(run_id)) for run_id in run_ids] == streams
    assert api.get(f"/api/datasets/{dataset_id}").status_code == 200
    # Once the database takes it, the same request deletes them.
    assert api.post("/api/runs/delete", json={"ids": run_ids}).json()["deleted"] == run_ids


def test_folders_a_killed_deletion_moved_aside_are_settled_by_the_next(
    api: TestClient, make_run: MakeRun, database: Database, settings: Settings
) -> None:
    alive, gone, recent = make_run(), new_id(), make_run()
    long_ago = time.time_ns() - (run_deletion.STALE_TRASH_S + 60) * 1_000_000_000
    folder = artifacts.run_dir(settings.runs_dir, alive)
    stale_alive = artifacts.trash_dir(settings.runs_dir, alive, long_ago)
    folder.rename(stale_alive)  # killed after the move, before the rows went
    stale_gone = artifacts.trash_dir(settings.runs_dir, gone, long_ago)
    (stale_gone / "checkpoints").mkdir(parents=True)  # killed after the rows went
    # A deletion of this very moment, still under way, is left to its owner.
    in_flight = artifacts.trash_dir(settings.runs_dir, recent, time.time_ns())
    in_flight.mkdir()

    assert api.post("/api/runs/delete", json={"ids": ["e" * 32]}).json()["missing"] == ["e" * 32]
    assert files_of(settings, alive) == [
        "checkpoints",
        "checkpoints/epoch-0001.keras",
        "model.keras",
    ]
    assert trash(settings) == [in_flight]


# -- deleting datasets -------------------------------------------------------


@pytest.fixture
def uploaded(api: TestClient, tmp_path: Path) -> str:
    archive = write_character_zip(tmp_path / "d.zip", num_classes=2, per_class=4)
    reply = api.post("/api/datasets", files={"file": ("d.zip", archive.read_bytes())})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def add_sweep(database: Database, dataset_id: str, status: str) -> str:
    with database.session() as session:
        sweep = Sweep(
            name="s",
            dataset_id=dataset_id,
            config={},
            space={},
            method="grid",
            max_runs=4,
            parallel=2,
            metric="val_loss",
            direction="minimize",
            options={},
            status=status,
        )
        session.add(sweep)
        session.commit()
        return sweep.id


def test_a_dataset_with_runs_is_a_409_listing_them_unless_they_go_too(
    api: TestClient,
    make_run: MakeRun,
    database: Database,
    redis_client: Redis,
    settings: Settings,
    uploaded: str,
) -> None:
    with database.session() as session:  # more than the conflict lists, made before
        yesterday = utcnow() - timedelta(days=1)
        session.add_all(
            Run(
                name=f"old {n}",
                dataset_id=uploaded,
                config={},
                status="failed",
                created_at=yesterday,
            )
            for n in range(105)
        )
        session.commit()
    finished, running = make_run(of=uploaded), make_run("running", of=uploaded)
    elsewhere = make_run()
    running_sweep = add_sweep(database, uploaded, "running")
    done_sweep = add_sweep(database, uploaded, "finished")

    reply = api.delete(f"/api/datasets/{uploaded}")
    assert reply.status_code == 409
    body = reply.json()
    assert body["detail"] == (
        f"dataset has 107 run(s); delete them first, or send "
        f"DELETE /api/datasets/{uploaded}?delete_runs=true to delete them with it"
    )
    assert len(body["runs"]) == run_deletion.LISTED_RUNS and body["total"] == 107
    assert set(body["runs"][0]) == {"id", "name", "status"}
    assert {finished, running} <= {run["id"] for run in body["runs"]}  # the newest
    assert api.get(f"/api/runs?dataset_id={uploaded}").json()["total"] == 107

    assert api.delete(f"/api/datasets/{uploaded}?delete_runs=true").status_code == 204
    assert api.get(f"/api/datasets/{uploaded}").status_code == 404
    assert api.get("/api/runs").json()["total"] == 1
    assert set(rows_of(database, finished).values()) == {0}
    assert not artifacts.run_dir(settings.runs_dir, running).exists()
    assert runs.cancel_requested(redis_client, running)
    assert not (settings.datasets_dir / uploaded).exists()
    assert list(settings.tmp_dir.iterdir()) == [] and trash(settings) == []
    with database.session() as session:
        sweeps = {s.id: s for s in session.scalars(select(Sweep))}
    assert sweeps[running_sweep].status == "cancelled" and sweeps[running_sweep].finished_at
    assert sweeps[done_sweep].status == "finished"
    assert api.get(f"/api/runs/{elsewhere}").status_code == 200


def test_the_dataset_delete_route_documents_its_409(api: TestClient) -> None:
    route = api.get("/openapi.json").json()["paths"]["/api/datasets/{dataset_id}"]["delete"]
    assert route["responses"]["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DatasetInUse"
    }
    assert {p["name"] for p in route["parameters"]} == {"dataset_id", "delete_runs"}
