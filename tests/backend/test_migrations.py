"""Schema migrations over real databases: an old database file (the schema
create_all made before migrations, as committed SQL) holding runs stored under
older config shapes is migrated by the real app at start and reads whole;
`curvelab migrate` reports what it applied; processes starting together take
turns; and the migrated schema is exactly the models' (no autogenerate diff).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient

from backend import schema
from backend.api.main import create_app
from backend.cli.main import main
from backend.db import Base, Database, Run, make_engine
from backend.settings import Settings
from frontend.run_tables import compare_rows, runs_rows
from tests.backend.test_diagnosis_gap import LAGGING
from tests.conftest import BOTH_DATABASES, wait_for

OLD_SCHEMA = Path(__file__).parent / "old_schema"
DATASET = "d" * 32
# Runs as an earlier version stored them: its config had no mixed_precision,
# jit_compile or gap_probes; later versions removed "legacy_knob", renamed a
# field ("lr", read back as unknown) and narrowed a bound (epochs ≤ 1000).
OLD_RUNS: dict[str, dict[str, Any]] = {
    "1" * 32: {
        "name": "legacy knob",
        "status": "succeeded",
        "config": {"epochs": 4, "bn_momentum": 0.99, "legacy_knob": 3, "filters": [8, 16]},
    },
    "2" * 32: {
        "name": "renamed",
        "status": "failed",
        "config": {"epochs": 4, "lr": 0.01, "augment": {"flip": True, "shear": 0.2}},
    },
    "3" * 32: {
        "name": "out of bounds",
        "status": "cancelled",
        "config": {"epochs": 5000, "dense_units": 64},
    },
}
LEGACY = "1" * 32


def _old_database(url: str, *, drop: tuple[str, ...] = (), columns: str = "") -> None:
    """The baseline schema from its SQL file, a dataset, the old runs, and
    epochs of the first run; ``drop``: tables of an even older version;
    ``columns``: ALTERs of a version between (add_new_columns' work)."""
    engine = make_engine(url)
    ddl = (OLD_SCHEMA / f"0001.{engine.dialect.name}.sql").read_text()
    statements = [s for s in ddl.split(";") if s.strip().strip("-").strip()]
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    as_json, stamp = sa.JSON(), sa.DateTime(timezone=True)
    datasets = sa.table(
        "datasets",
        *[sa.column(n) for n in ("id", "name", "num_images")],
        *[sa.column(n, as_json) for n in ("classes", "image_shapes", "warnings")],
        sa.column("created_at", stamp),
    )
    runs = sa.table(
        "runs",
        *[sa.column(n) for n in ("id", "name", "dataset_id", "status", "epochs_done")],
        sa.column("class_names", as_json),
        sa.column("config", as_json),
        sa.column("created_at", stamp),
    )
    epochs = sa.table("epoch_metrics", sa.column("run_id"), sa.column("epoch"))
    epochs.append_column(sa.column("values", as_json))
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
        for table in drop:
            connection.exec_driver_sql(f"DROP TABLE {table}")
        for alter in filter(None, columns.split(";")):
            connection.exec_driver_sql(alter)
        connection.execute(
            datasets.insert(),
            {
                "id": DATASET,
                "name": "old",
                "num_images": 40,
                "classes": [{"name": "a", "count": 20}, {"name": "b", "count": 20}],
                "image_shapes": [],
                "warnings": [],
                "created_at": now,
            },
        )
        for run_id, run in OLD_RUNS.items():
            done = 4 if run_id == LEGACY else 0
            connection.execute(
                runs.insert(),
                {**run, "id": run_id, "dataset_id": DATASET, "epochs_done": done}
                | {"class_names": ["a", "b"], "created_at": now},
            )
        for row in LAGGING[:4]:
            values = {k: v for k, v in row.items() if k != "epoch"}
            connection.execute(
                epochs.insert(), {"run_id": LEGACY, "epoch": row["epoch"], "values": values}
            )
    engine.dispose()


def _diff(url: str) -> list[Any]:
    """What autogenerate would change: nothing, when the migrations are complete."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "include_object": schema.include_object,
                    "compare_type": True,
                    "compare_server_default": True,
                },
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


@BOTH_DATABASES
def test_a_new_database_is_migrated_to_exactly_the_models(settings: Settings) -> None:
    url = settings.sqlalchemy_url
    engine = make_engine(url)
    with engine.begin() as connection:  # another library's table (Optuna's, say)
        connection.exec_driver_sql("CREATE TABLE studies (study_id INTEGER PRIMARY KEY)")
    done = schema.upgrade(engine)
    assert (done.before, done.stamped, done.applied) == (
        None,
        None,
        ["0001", "0002", "0003", "0004", "0005"],
    )
    assert schema.current(engine) == schema.head() == "0005"
    assert sa.inspect(engine).has_table("studies")  # left alone
    with engine.connect() as connection:  # `alembic check` through migrations/env.py
        command.check(schema.alembic_config(connection=connection))
    engine.dispose()
    assert _diff(url) == []
    again = Database(url)  # as the next process to start: nothing to do
    assert schema.upgrade(again.engine).applied == []
    again.dispose()


@BOTH_DATABASES
def test_an_old_database_file_is_migrated_at_start_and_every_run_reads(
    settings: Settings,
) -> None:
    _old_database(settings.sqlalchemy_url)
    with TestClient(create_app(settings)) as api:
        listed = api.get("/api/runs")
        assert listed.status_code == 200, listed.text
        by_id = {run["id"]: run for run in listed.json()["items"]}
        assert set(by_id) == set(OLD_RUNS)

        legacy = by_id[LEGACY]
        # Migration 0005 filled its summary from the epochs it had.
        losses = [row["val_loss"] for row in LAGGING[:4]]
        assert legacy["best_val_loss"] == min(losses)
        assert legacy["best_val_loss_epoch"] == 1 + losses.index(min(losses))
        # Made before external runs existed: a worker's, on every database.
        assert {run["source"] for run in by_id.values()} == {"worker"}
        assert legacy["config"]["filters"] == [8, 16] and legacy["config"]["gap_probes"] is True
        assert legacy["config_unknown"] == {"legacy_knob": 3}
        assert legacy["config_notes"] == []
        renamed = by_id["2" * 32]
        assert renamed["config_unknown"] == {"lr": 0.01, "augment": {"shear": 0.2}}
        assert renamed["config"]["learning_rate"] == 0.001  # the new name: its default
        assert renamed["config"]["augment"]["flip"] is True
        bounded = by_id["3" * 32]
        assert bounded["config"]["epochs"] == 20 and bounded["config"]["dense_units"] == 64
        assert bounded["config_notes"][0].startswith("epochs: the stored value 5000 ")

        for run_id in OLD_RUNS:
            for path in ("", "/metrics", "/diagnosis"):
                reply = api.get(f"/api/runs/{run_id}{path}")
                assert reply.status_code == 200, (path, reply.text)
        metrics = api.get(f"/api/runs/{LEGACY}/metrics").json()
        assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3, 4]
        findings = api.get(f"/api/runs/{LEGACY}/diagnosis").json()["findings"]
        assert "batchnorm_lag" in {finding["code"] for finding in findings}

        # What the Compare page and the Runs list show: the unknown fields too.
        shown = [by_id[LEGACY], renamed]
        labels = {run["id"]: run["name"] for run in shown}
        table = {row[""]: row for row in compare_rows(shown, labels, {})}
        assert table["legacy_knob (not used)"]["legacy knob"] == "3"
        assert table["legacy_knob (not used)"]["renamed"] == "—"
        assert table["augment.shear (not used)"]["renamed"] == "0.2"
        _, fields = runs_rows(shown, {})
        assert "lr (not used)" in fields

    # Nothing was dropped from SQL: the stored configs are as they were.
    engine = make_engine(settings.sqlalchemy_url)
    with engine.connect() as connection:
        stored = dict(connection.execute(sa.text("SELECT id, config FROM runs")).all())
    engine.dispose()
    for run_id, run in OLD_RUNS.items():
        value = stored[run_id]
        assert (value if isinstance(value, dict) else json.loads(value)) == run["config"]
    assert _diff(settings.sqlalchemy_url) == []


@pytest.mark.parametrize(
    ("drop", "columns", "stamped", "applied"),
    [
        # Before the evaluations table: nothing to stamp, the baseline adds it.
        (("evaluations",), "", None, ["0001", "0002", "0003", "0004", "0005"]),
        ((), "", "0001", ["0002", "0003", "0004", "0005"]),
        # metrics_version came a release before attempt: 0002 adds only attempt.
        (
            (),
            "ALTER TABLE runs ADD COLUMN metrics_version INTEGER DEFAULT 0 NOT NULL",
            "0001",
            ["0002", "0003", "0004", "0005"],
        ),
        (
            (),
            "ALTER TABLE runs ADD COLUMN metrics_version INTEGER DEFAULT 0 NOT NULL;"
            "ALTER TABLE runs ADD COLUMN attempt INTEGER DEFAULT 0 NOT NULL",
            "0002",
            ["0003", "0004", "0005"],
        ),
        (
            (),
            "ALTER TABLE runs ADD COLUMN metrics_version INTEGER DEFAULT 0 NOT NULL;"
            "ALTER TABLE runs ADD COLUMN attempt INTEGER DEFAULT 0 NOT NULL;"
            "ALTER TABLE runs ADD COLUMN holder VARCHAR(200);"
            "ALTER TABLE runs ADD COLUMN deaths INTEGER DEFAULT 0 NOT NULL;"
            "ALTER TABLE runs ADD COLUMN queued_at DATETIME",
            "0003",
            ["0004", "0005"],
        ),
    ],
)
def test_a_database_made_before_migrations_is_stamped_where_its_columns_match(
    tmp_path: Path, drop: tuple[str, ...], columns: str, stamped: str | None, applied: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'curvelab.db'}"
    _old_database(url, drop=drop, columns=columns)
    engine = make_engine(url)
    done = schema.upgrade(engine)
    assert (done.before, done.stamped, done.applied) == (None, stamped, applied)
    with engine.connect() as connection:
        kept = connection.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
        defaults = connection.execute(
            sa.text("SELECT metrics_version, attempt, deaths FROM runs")
        ).all()
    engine.dispose()
    assert kept == len(OLD_RUNS) and set(defaults) == {(0, 0, 0)}
    assert _diff(url) == []


def test_curvelab_migrate_reports_the_revisions_it_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CURVELAB_DATABASE_URL", raising=False)
    original = tmp_path / "original"
    original.mkdir()
    _old_database(f"sqlite:///{original / 'curvelab.db'}")
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(original / "curvelab.db", copy / "curvelab.db")

    assert main(["migrate", "--data-dir", str(copy), "--current"]) == 0
    assert "at revision none (the newest is 0005)" in capsys.readouterr().out
    assert main(["migrate", "--data-dir", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "made before migrations; its columns match revision 0001" in out
    assert "applied 0002, 0003, 0004, 0005; now at revision 0005" in out
    assert main(["migrate", "--data-dir", str(copy)]) == 0
    assert "already at the newest revision, 0005" in capsys.readouterr().out
    assert main(["migrate", "--data-dir", str(copy), "--current"]) == 0
    assert "at revision 0005 (the newest)" in capsys.readouterr().out
    assert schema.current(make_engine(f"sqlite:///{original / 'curvelab.db'}")) is None

    assert main(["migrate", "--sql"]) == 0
    sql = capsys.readouterr().out
    assert "CREATE TABLE runs" in sql and "queued_at" in sql and "alembic_version" in sql


# Each process imports first, says it is ready, then opens the database at the
# same moment as the others: the API and workers starting together.
_STARTER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from backend.db import Database
    folder = Path(sys.argv[2])
    (folder / f"ready-{sys.argv[3]}").touch()
    while not (folder / "go").exists():
        time.sleep(0.005)
    Database(sys.argv[1]).dispose()
    """
)


@BOTH_DATABASES
@pytest.mark.parametrize("old", [False, True], ids=["new", "old"])
def test_processes_starting_together_take_turns(
    settings: Settings, tmp_path: Path, old: bool
) -> None:
    url = settings.sqlalchemy_url
    if old:
        _old_database(url)
    folder = tmp_path / "start"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER, url, str(folder), str(n)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    try:
        wait_for(
            lambda: len(list(folder.glob("ready-*"))) == len(starters),
            timeout=120,
            what="every process imported",
        )
        (folder / "go").touch()
        for process in starters:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
    finally:
        for process in starters:
            if process.poll() is None:
                process.kill()
    engine = make_engine(url)
    with engine.connect() as connection:
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        kept = connection.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
    engine.dispose()
    assert versions == [("0005",)]
    assert kept == (len(OLD_RUNS) if old else 0)
    assert _diff(url) == []


def test_an_installed_package_carries_its_migrations(tmp_path: Path) -> None:
    """``pip install .`` (a wheel) holds migrations/ beside backend/, where
    backend.schema looks for it."""
    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("backend", "worker", "frontend", "migrations"):
        shutil.copytree(root / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    wheel = tmp_path / "wheel"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, str(source), "-w", str(wheel)], check=True, timeout=300)
    installed = tmp_path / "site"
    shutil.unpack_archive(next(wheel.glob("*.whl")), installed, format="zip")
    found_files = (installed / "migrations").rglob("*")
    names = {p.relative_to(installed / "migrations").as_posix() for p in found_files}
    assert {"env.py", "script.py.mako", "versions/0004_external_runs.py"} <= names
    probe = (
        "import backend, sys; from backend import schema; from backend.db import Database; "
        "Database(sys.argv[1]).dispose(); print(backend.__file__, schema.head())"
    )
    url = f"sqlite:///{tmp_path / 'curvelab.db'}"
    found = subprocess.run(
        [sys.executable, "-c", probe, url],
        env={**os.environ, "PYTHONPATH": str(installed)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert found == [str(installed / "backend" / "__init__.py"), "0005"]


@pytest.mark.parametrize("image", ["backend", "worker"])
def test_the_images_that_open_the_database_carry_the_migrations(image: str) -> None:
    dockerfile = Path(__file__).resolve().parents[2] / image / "Dockerfile"
    assert "COPY migrations migrations" in dockerfile.read_text()


def test_a_database_a_newer_version_migrated_is_left_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CURVELAB_DATABASE_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'curvelab.db'}"
    Database(url).dispose()
    engine = make_engine(url)
    with engine.begin() as connection:  # as a later release's 0006 would leave it
        connection.exec_driver_sql("ALTER TABLE runs ADD COLUMN later INTEGER")
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0006'")
    engine.dispose()
    database = Database(url)  # a worker of this release, restarted during the upgrade
    with database.session() as session:
        assert session.scalars(sa.select(Run)).all() == []
    database.dispose()
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    assert "at revision 0006, newer than this version's 0005" in capsys.readouterr().out


@BOTH_DATABASES
def test_a_migration_that_fails_midway_changes_nothing(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = settings.sqlalchemy_url
    Database(url).dispose()
    broken = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, broken, ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "versions" / "0006_broken.py").write_text(
        textwrap.dedent(
            """
            import sqlalchemy as sa
            from alembic import op

            revision, down_revision, branch_labels, depends_on = "0006", "0005", None, None

            def upgrade():
                with op.batch_alter_table("runs") as batch:
                    batch.add_column(sa.Column("half_done", sa.Integer(), nullable=True))
                op.execute("UPDATE runs SET no_such_column = 1")

            def downgrade():
                pass
            """
        )
    )
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", broken)
    schema.head.cache_clear()
    schema._revisions.cache_clear()
    try:
        engine = make_engine(url)
        with pytest.raises(sa.exc.SQLAlchemyError):
            schema.upgrade(engine)
        assert schema.current(engine) == "0005"
        assert "half_done" not in {c["name"] for c in sa.inspect(engine).get_columns("runs")}
        engine.dispose()
    finally:
        schema.head.cache_clear()
        schema._revisions.cache_clear()
