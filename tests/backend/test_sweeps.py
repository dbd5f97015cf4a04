"""Sweeps over real SQL and a real Optuna storage: the space checks, the
grid's order and budget, ``advance`` filling ``parallel`` slots and no more,
telling the study what each run came to, ranking, cancel, and "Try every
suggestion". Celery is a narrow fake that records what would be sent: the
wiring to a real broker and workers is the e2e test's (tests/e2e/test_sweeps.py)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState
from sqlalchemy import select

from backend import events, runs, sweep_study, sweeps
from backend.api.sweep_schemas import SweepCreate
from backend.db import Database, Dataset, Run, Sweep, new_id
from backend.settings import Settings
from backend.sweep_suggestions import suggestions_sweep
from backend.sweep_view import sweep_public
from backend.train_config import TrainConfig
from tests.backend.test_diagnosis_gap import LAGGING
from tests.backend.test_external_runs import create as create_external
from tests.conftest import BOTH_DATABASES

BASE = {"epochs": 3, "filters": [8, 16], "dense_units": 16}


class SentTasks:
    """What ``send_task`` was asked to send (a Celery app's one method here)."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[str] = []
        self.fail = fail

    def send_task(self, name: str, args: list[Any], **_: Any) -> None:
        if self.fail:
            raise OSError("broker away")
        self.sent.append(args[0])


def _create(
    database: Database, settings: Settings, dataset_id: str, celery: Any = None, **fields: Any
) -> Sweep:
    body = SweepCreate.model_validate({"dataset_id": dataset_id, "config": BASE, **fields})
    with database.session() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        return sweeps.create_sweep(session, settings, celery or SentTasks(), dataset, body)


def _runs(database: Database, sweep_id: str) -> list[Run]:
    with database.session() as session:
        query = select(Run).where(Run.sweep_id == sweep_id).order_by(Run.trial_number)
        return list(session.scalars(query))


def _advance(database: Database, settings: Settings, sweep_id: str, celery: Any = None) -> list:
    with database.session() as session:
        return sweeps.advance(session, settings, celery or SentTasks(), sweep_id)


def _train(database: Database, run_id: str, val_losses: list[float], status: str) -> None:
    """A worker's life of the run, through backend.runs as the worker does it."""
    with database.session() as session:
        run = runs.mark_running(session, None, run_id)
        assert run is not None
        for epoch, loss in enumerate(val_losses, start=1):
            values = {"loss": loss, "val_loss": loss, "val_accuracy": 1.0 / (1.0 + loss)}
            runs.record_epoch(session, run_id, epoch, values, [], attempt=run.attempt)
        runs.finish(
            session, None, run_id, status, error="stopped" if status != "succeeded" else None
        )


def _trial_states(settings: Settings, sweep: Sweep) -> dict[int, TrialState]:
    study = optuna.load_study(
        study_name=sweep_study.study_name(sweep.id), storage=sweep_study.storage(settings)
    )
    return {trial.number: trial.state for trial in study.get_trials()}


# -- the space, as the API refuses it ------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        (
            {"space": {"lerning_rate": [0.1]}},
            "space.lerning_rate: TrainConfig has no field 'lerning_rate' (it has: ",
        ),
        ({"space": {"augment.flp": [True]}}, "space.augment.flp: augment has no field 'flp'"),
        (
            {"space": {"learning_rate": [0.001, 20]}},
            "space.learning_rate: the value 20 does not make a valid TrainConfig: "
            "learning_rate: Input should be less than or equal to 10",
        ),
        (
            {"space": {"batch_size": {"low": 16, "high": 100000}}},
            "space.batch_size: the bound 100000 does not make a valid TrainConfig: "
            "batch_size: Input should be less than or equal to 8192",
        ),
        (
            {"method": "grid", "space": {"learning_rate": {"low": 1e-4, "high": 1e-2}}},
            "space.learning_rate: a grid sweep takes lists of values only; "
            "use method random or tpe for a range",
        ),
        (
            {"space": {"learning_rate": {"low": 0, "high": 1, "log": True}}},
            "space.learning_rate.range: a log range needs low > 0",
        ),
        (
            {"space": {"optimizer": {"low": 0, "high": 1}}},
            "space.optimizer: a range needs a number field; give a list of values instead",
        ),
        ({"space": {"dense_units": {"low": 4.2, "high": 4.8}}}, "no whole number lies in 4.2..4.8"),
        ({"space": {"dropout": []}}, "space.dropout: give at least one value"),
        ({"space": {}}, "space: give at least one knob to sweep"),
        ({"method": "list"}, "variants: a list sweep needs at least one variant"),
        (
            {"method": "list", "variants": [{"label": "big", "patch": {"kernel_size": 99}}]},
            'variants[0] "big" does not make a valid TrainConfig: kernel_size: Input should be',
        ),
        (
            {"method": "grid", "space": {"image_size": [[8, 8]], "filters": [[8, 16, 32, 64]]}},
            "the combination image_size=[8, 8] filters=[8, 16, 32, 64] does not make a valid "
            "TrainConfig: filters: 4 pooling blocks shrink a 8-pixel side below 1 pixel",
        ),
    ],
)
def test_a_space_that_cannot_make_valid_runs_is_refused_naming_the_knob(
    api: TestClient, make_dataset_row, fields: dict[str, Any], detail: str
) -> None:
    body = {"dataset_id": make_dataset_row(), "config": BASE, **fields}
    reply = api.post("/api/sweeps", json=body)
    assert reply.status_code == 422, reply.text
    assert detail in reply.json()["detail"]


def test_a_sweep_of_a_missing_dataset_is_a_404(api: TestClient) -> None:
    reply = api.post("/api/sweeps", json={"dataset_id": "abc123", "space": {"dropout": [0.1]}})
    assert (reply.status_code, reply.json()) == (404, {"detail": "dataset abc123 not found"})
    assert api.get("/api/sweeps/abc123").status_code == 404


# -- grid order and budget ---------------------------------------------------------


@BOTH_DATABASES
def test_grid_runs_every_combination_in_order_first_knob_slowest(
    database: Database, settings: Settings, make_dataset_row
) -> None:
    celery = SentTasks()
    space = {"bn_momentum": [0.9, 0.99], "learning_rate": [0.001, 0.01], "augment.flip": [True]}
    sweep = _create(
        database, settings, make_dataset_row(), celery, method="grid", space=space, parallel=8
    )
    assert sweep.max_runs == 4  # the number of combinations, not the default budget
    made = _runs(database, sweep.id)
    assert [(r.config["bn_momentum"], r.config["learning_rate"]) for r in made] == [
        (0.9, 0.001),
        (0.9, 0.01),
        (0.99, 0.001),
        (0.99, 0.01),
    ]
    assert all(r.config["augment"]["flip"] is True for r in made)
    assert [r.trial_number for r in made] == [0, 1, 2, 3]
    assert made[0].name == "bn_momentum=0.9 learning_rate=0.001 augment.flip=true"
    assert celery.sent == [r.id for r in made]


@BOTH_DATABASES
def test_a_grid_budget_is_capped_at_the_combinations_and_may_be_smaller(
    database: Database, settings: Settings, make_dataset_row
) -> None:
    dataset_id = make_dataset_row()
    space = {"dropout": [0.0, 0.25, 0.5]}
    big = _create(database, settings, dataset_id, method="grid", space=space, max_runs=50)
    assert big.max_runs == 3
    small = _create(
        database, settings, dataset_id, method="grid", space=space, max_runs=2, parallel=2
    )
    assert [r.config["dropout"] for r in _runs(database, small.id)] == [0.0, 0.25]


# -- advance ---------------------------------------------------------------------


@BOTH_DATABASES
def test_advance_keeps_parallel_runs_going_tells_the_study_and_finishes(
    database: Database, settings: Settings, make_dataset_row
) -> None:
    space = {"dropout": [0.0, 0.1, 0.2, 0.3]}
    sweep = _create(database, settings, make_dataset_row(), method="grid", space=space, parallel=2)
    first = _runs(database, sweep.id)
    assert [r.status for r in first] == ["queued", "queued"]
    # Idempotent: nothing finished, every slot full.
    assert _advance(database, settings, sweep.id) == []
    assert len(_runs(database, sweep.id)) == 2

    _train(database, first[0].id, [1.0, 0.6, 0.5], "succeeded")
    launched = _advance(database, settings, sweep.id)
    assert len(launched) == 1
    assert _advance(database, settings, sweep.id) == []
    assert _trial_states(settings, sweep)[0] == TrialState.COMPLETE

    _train(database, first[1].id, [1.2], "pruned")
    _advance(database, settings, sweep.id)
    made = _runs(database, sweep.id)
    assert len(made) == 4
    _train(database, made[2].id, [0.9], "failed")
    _train(database, made[3].id, [], "succeeded")  # no val_loss at all: nothing to rank by
    assert _advance(database, settings, sweep.id) == []
    states = _trial_states(settings, sweep)
    assert states == {
        0: TrialState.COMPLETE,
        1: TrialState.PRUNED,
        2: TrialState.FAIL,
        3: TrialState.FAIL,
    }
    study = optuna.load_study(
        study_name=sweep_study.study_name(sweep.id), storage=sweep_study.storage(settings)
    )
    assert study.best_trial.value == pytest.approx(0.5)  # the best epoch, not the last
    with database.session() as session:
        done = session.get(Sweep, sweep.id)
        assert done is not None
        assert (done.status, done.finished_at is not None) == ("finished", True)
        view = sweep_public(session, done)
        brief = sweep_public(session, done, with_runs=False)  # the list's: counted in SQL
    assert view.counts == brief.counts == {"succeeded": 2, "pruned": 1, "failed": 1}
    assert view.best_run_id == brief.best_run_id == first[0].id
    assert brief.runs == []


@BOTH_DATABASES
def test_random_and_tpe_sweeps_ask_the_sampler_within_the_space(
    database: Database, settings: Settings, make_dataset_row
) -> None:
    dataset_id = make_dataset_row()
    space = {
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "dense_units": {"low": 8, "high": 64},
        "optimizer": ["adam", "sgd"],
    }
    for method in ("random", "tpe"):
        sweep = _create(
            database, settings, dataset_id, method=method, space=space, parallel=3, seed=7
        )
        assert sweep.max_runs == 10
        made = _runs(database, sweep.id)
        assert len(made) == 3
        for run in made:
            assert 1e-4 <= run.config["learning_rate"] <= 1e-2
            assert isinstance(run.config["dense_units"], int)
            assert 8 <= run.config["dense_units"] <= 64
            assert run.config["optimizer"] in ("adam", "sgd")
        # Reopening the seeded study does not ask the same values again.
        assert len({r.config["learning_rate"] for r in made}) == 3


@BOTH_DATABASES
def test_a_run_that_cannot_be_queued_fails_and_the_sweep_waits(
    database: Database, settings: Settings, make_dataset_row
) -> None:
    space = {"dropout": [0.0, 0.1, 0.2]}
    sweep = _create(
        database,
        settings,
        make_dataset_row(),
        SentTasks(fail=True),
        method="grid",
        space=space,
        parallel=3,
    )
    (only,) = _runs(database, sweep.id)  # not the whole budget burnt on a dead broker
    assert only.status == "failed" and "could not queue the run" in (only.error or "")


@BOTH_DATABASES
def test_a_trial_asked_without_a_run_is_failed_and_its_point_asked_again(
    database: Database, settings: Settings, make_dataset_row
) -> None:
    sweep = _create(
        database,
        settings,
        make_dataset_row(),
        method="grid",
        space={"dropout": [0.0, 0.1]},
        parallel=1,
    )
    with database.session() as session:
        stored = session.get(Sweep, sweep.id)
        assert stored is not None
        study = sweep_study.load(settings, stored)
    study.ask()  # as a process that died before it made the run: trial 1 (dropout 0.1)
    first = _runs(database, sweep.id)[0]
    _train(database, first.id, [0.5], "succeeded")
    _advance(database, settings, sweep.id)
    made = _runs(database, sweep.id)
    assert [r.config["dropout"] for r in made] == [0.0, 0.1]
    assert _trial_states(settings, sweep)[1] == TrialState.FAIL


# -- ranking ----------------------------------------------------------------------


@BOTH_DATABASES
@pytest.mark.parametrize(
    ("metric", "expected"), [("val_loss", [1, 0, 2]), ("val_accuracy", [1, 0, 2])]
)
def test_runs_rank_best_first_in_the_metric_s_direction(
    database: Database, settings: Settings, make_dataset_row, metric: str, expected: list[int]
) -> None:
    space = {"dropout": [0.0, 0.1, 0.2, 0.3]}
    sweep = _create(
        database,
        settings,
        make_dataset_row(),
        method="grid",
        space=space,
        parallel=4,
        metric=metric,
    )
    assert sweep.direction == ("maximize" if metric == "val_accuracy" else "minimize")
    made = _runs(database, sweep.id)
    # Lower val_loss is higher val_accuracy here (1 / (1 + loss)): the same order.
    _train(database, made[0].id, [0.9, 0.7], "succeeded")
    _train(database, made[1].id, [0.4, 0.6], "succeeded")  # best at epoch 1
    _train(database, made[2].id, [1.5], "failed")
    with database.session() as session:
        stored = session.get(Sweep, sweep.id)
        assert stored is not None
        view = sweep_public(session, stored)
    by_id = {run.id: i for i, run in enumerate(made)}
    assert [by_id[run.id] for run in view.runs] == [*expected, 3]  # no value: last
    assert view.runs[0].value == pytest.approx(0.4 if metric == "val_loss" else 1 / 1.4)
    assert view.runs[0].params == {"dropout": 0.1}
    assert view.runs[-1].value is None


# -- cancel -----------------------------------------------------------------------


@BOTH_DATABASES
def test_cancel_stops_the_queued_runs_and_launches_no_more(
    api: TestClient, database: Database, make_dataset_row, redis_client
) -> None:
    body = {
        "dataset_id": make_dataset_row(),
        "config": BASE,
        "method": "grid",
        "space": {"dropout": [0.0, 0.1, 0.2]},
        "parallel": 2,
    }
    created = api.post("/api/sweeps", json=body)
    assert created.status_code == 201, created.text
    sweep = created.json()
    assert (sweep["status"], sweep["counts"]) == ("running", {"queued": 2})
    with database.session() as session:
        first = session.scalars(select(Run).where(Run.sweep_id == sweep["id"])).first()
        assert first is not None
        runs.mark_running(session, None, first.id)
    reply = api.post(f"/api/sweeps/{sweep['id']}/cancel")
    assert reply.status_code == 200, reply.text
    cancelled = reply.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"] == {"running": 1, "cancelled": 1}
    assert redis_client.exists(events.cancel_key(first.id))  # the worker's signal
    listed = api.get("/api/sweeps").json()
    assert [s["id"] for s in listed] == [sweep["id"]] and listed[0]["runs"] == []
    # The running one stops at its next batch; still no new run after it.
    with database.session() as session:
        runs.finish(session, None, first.id, "cancelled")
    again = api.post(f"/api/sweeps/{sweep['id']}/cancel").json()
    assert again["counts"] == {"cancelled": 2}
    assert again["status"] == "cancelled"


# -- try every suggestion ----------------------------------------------------------


def _lagging_run(database: Database, dataset_id: str) -> str:
    with database.session() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        config = TrainConfig(**BASE, bn_momentum=0.99).model_copy(update={"epochs": 6})
        run = runs.create_run(session, dataset, config, name="lagging")
        runs.mark_running(session, None, run.id)
        for row in LAGGING:
            values = {key: value for key, value in row.items() if key != "epoch"}
            runs.record_epoch(session, run.id, row["epoch"], values, [])
        runs.finish(session, None, run.id, "succeeded")
        return run.id


def _plain(patch: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in patch.items())


@BOTH_DATABASES
def test_try_every_suggestion_sweeps_the_original_each_patch_and_all(
    api: TestClient, database: Database, settings: Settings, make_dataset_row
) -> None:
    run_id = _lagging_run(database, make_dataset_row())
    findings = api.get(f"/api/runs/{run_id}/diagnosis").json()["findings"]
    suggested = [f for f in findings if f["suggestion"]]
    assert suggested, findings
    reply = api.post(f"/api/runs/{run_id}/try-suggestions")
    assert reply.status_code == 201, reply.text
    sweep = reply.json()
    assert (sweep["method"], sweep["parallel"], sweep["source_run_id"]) == ("list", 2, run_id)
    labels = [v["label"] for v in sweep["variants"]]
    # Each run named for its change and the finding it answers.
    expected = ["original", *[f"{_plain(f['suggestion'])} · {f['code']}" for f in suggested]]
    if len(suggested) >= 2:
        assert labels[-1].endswith(" · all suggestions")
        labels = labels[:-1]
    assert labels == expected
    assert sweep["variants"][0]["patch"] == {}
    for variant, finding in zip(sweep["variants"][1:], suggested, strict=False):
        assert variant["patch"] == finding["suggestion"]
    if len(suggested) >= 2:
        merged: dict[str, Any] = {}
        for finding in reversed(suggested):
            merged.update(finding["suggestion"])
        assert sweep["variants"][-1]["patch"] == merged
    assert [r["label"] for r in sweep["runs"]] == labels[:2]  # two at a time
    original = api.get(f"/api/runs/{run_id}").json()["config"]
    assert sweep["runs"][0]["config"] == original


@BOTH_DATABASES
def test_try_every_suggestion_refuses_what_it_cannot_sweep(
    api: TestClient, database: Database, make_dataset_row
) -> None:
    dataset_id = make_dataset_row()
    with database.session() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        quiet = runs.create_run(session, dataset, TrainConfig(**BASE), name="no epochs").id
    reply = api.post(f"/api/runs/{quiet}/try-suggestions")
    assert (reply.status_code, reply.json()["detail"]) == (
        409,
        "the run's diagnosis suggests no config change to try",
    )
    external = create_external(api, new_id())
    assert external.status_code == 201, external.text
    reply = api.post(f"/api/runs/{external.json()['id']}/try-suggestions")
    assert reply.status_code == 409 and "its own script" in reply.json()["detail"]
    lagging = _lagging_run(database, dataset_id)
    with database.session() as session:
        gone = session.get(Dataset, dataset_id)
        session.delete(gone)
        session.commit()
    reply = api.post(f"/api/runs/{lagging}/try-suggestions")
    assert reply.status_code == 404 and "dataset was deleted" in reply.json()["detail"]
    assert api.post("/api/runs/abc123/try-suggestions").status_code == 404


def test_suggestions_sweep_needs_a_run_with_a_dataset(
    database: Database, settings: Settings
) -> None:
    with database.session() as session:
        run = Run(name="orphan", config={}, dataset_id=None)
        session.add(run)
        session.commit()
        with pytest.raises(sweeps.SweepError) as refused:
            suggestions_sweep(session, settings, SentTasks(), run)
    assert refused.value.status_code == 404


@BOTH_DATABASES
def test_cancelling_one_queued_run_of_a_sweep_gives_its_slot_to_the_next(
    api: TestClient, database: Database, make_dataset_row
) -> None:
    body = {
        "dataset_id": make_dataset_row(),
        "config": BASE,
        "method": "grid",
        "space": {"dropout": [0.0, 0.1, 0.2]},
        "parallel": 2,
    }
    sweep = api.post("/api/sweeps", json=body).json()
    first = api.get("/api/runs", params={"sweep_id": sweep["id"], "sort": "created"}).json()
    assert [r["status"] for r in first["items"]] == ["queued", "queued"]
    reply = api.post(f"/api/runs/{first['items'][0]['id']}/cancel")
    assert reply.json()["status"] == "cancelled"
    # At once, not at the next sweeper pass: the third point is queued.
    now = api.get(f"/api/sweeps/{sweep['id']}").json()
    assert now["counts"] == {"cancelled": 1, "queued": 2}
    assert sorted(r["params"]["dropout"] for r in now["runs"]) == [0.0, 0.1, 0.2]
