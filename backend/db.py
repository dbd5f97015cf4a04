"""SQL tables and sessions: the durable record of datasets, runs and metrics.

Redis may be flushed; what is here survives. SQLite under the data dir by
default, PostgreSQL through ``CURVELAB_DATABASE_URL``. A change to these
tables is a new revision under ``migrations/`` (tests/backend/test_migrations.py
fails until the two agree).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.types import TypeDecorator

from backend import schema


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every database: SQLite drops the zone on the way
    back, which would make the API's timestamps ambiguous."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    num_images: Mapped[int] = mapped_column(Integer)
    # [{"name": str, "count": int}], in class-index order (index = label).
    classes: Mapped[list[Any]] = mapped_column(JSON)
    image_shapes: Mapped[list[Any]] = mapped_column(JSON)
    warnings: Mapped[list[Any]] = mapped_column(JSON)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    # A deleted dataset leaves its runs' curves and models in place.
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), index=True, nullable=True
    )
    # Copied from the dataset at creation: the label order the model predicts in.
    class_names: Mapped[list[Any]] = mapped_column(JSON, default=list)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    resumed_at_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Moves with every change to the run's metric rows (backend.runs): the
    # version GET /metrics's ETag and body cache name.
    metrics_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # One more for each delivery that starts training the run (runs.mark_running):
    # the fencing token its epochs are recorded under.
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The lease owner (``host:pid``) of the current attempt: whom to blame when it dies.
    holder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Deliveries whose worker died while training the run (the lease sweeper
    # counts them): past CURVELAB_MAX_DELIVERY_DEATHS the run fails instead.
    deaths: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the run last entered "queued" (created, or queued again): the
    # reconciler re-sends a run queued too long whose message is nowhere.
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Who trains it: "worker" (a TrainConfig, queued) or "keras" (a user's own
    # model.fit with curvelab.Callback, sent over REST: backend.external_runs).
    # An external run has no lease, no queue message and config {}.
    source: Mapped[str] = mapped_column(String(16), default="worker", server_default="worker")
    # The machine an external run trains on, as its client names it.
    host: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # An external run's model and fit settings (backend.fit_summary.FitSummary):
    # what a TrainConfig says of a worker's run.
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # What the runs list shows and sorts by, kept up to date from the epoch
    # rows by backend.run_summary in each transaction that changes them.
    best_val_loss: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    best_val_loss_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    best_val_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    best_val_accuracy_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Training seconds of the recorded epochs (resumes included, queue waits not).
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    images_per_sec: Mapped[float | None] = mapped_column(Float, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The sweep that made the run, and its Optuna trial number there.
    sweep_id: Mapped[str | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="SET NULL"), index=True, nullable=True
    )
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tag_rows: Mapped[list[RunTag]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="RunTag.tag"
    )

    @property
    def tags(self) -> list[str]:
        return [row.tag for row in self.tag_rows]


class RunTag(Base):
    """One tag of a run: a table, so that a tag filter is an indexed lookup
    on every database (JSON arrays query differently on each)."""

    __tablename__ = "run_tags"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Sweep(Base):
    """Runs of one dataset and base config that an Optuna study chooses
    (backend.sweeps): its space, method, budget and pruner, and its status."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), index=True, nullable=True
    )
    # The base TrainConfig every run patches, as JSON.
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Knob -> list of values, or {"low", "high", "log"} (schemas.SweepCreate).
    space: Mapped[dict[str, Any]] = mapped_column(JSON)
    # method "list": the config patches to try, in order ([{"label", "patch"}]).
    variants: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    method: Mapped[str] = mapped_column(String(16))
    max_runs: Mapped[int] = mapped_column(Integer)
    parallel: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))  # "minimize" or "maximize"
    prune: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Pruner settings and the sampler's seed ({"startup_runs", "warmup_epochs", "seed"}).
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The run page's "Try every suggestion": the run whose diagnosis it tries.
    source_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class EpochMetrics(Base):
    __tablename__ = "epoch_metrics"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1-based
    # Every Keras log value plus seconds, images_per_sec, lr (see backend.events).
    values: Mapped[dict[str, Any]] = mapped_column(JSON)


class BatchMetrics(Base):
    __tablename__ = "batch_metrics"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)  # global, 1-based
    epoch: Mapped[float] = mapped_column(Float)  # fractional: 2.25 = a quarter into epoch 3
    values: Mapped[dict[str, Any]] = mapped_column(JSON)


class Evaluation(Base):
    """A finished run's evaluation on its validation split, per set of weights
    (see backend.evaluations)."""

    __tablename__ = "evaluations"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    weights: Mapped[str] = mapped_column(String(8), primary_key=True)  # "best" or "final"
    epoch: Mapped[int] = mapped_column(Integer)  # 1-based: whose weights were evaluated
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


def _wal(cursor: Any, attempts: int = 50) -> None:
    """WAL, which lets the API read while a worker writes an epoch. Set once
    per file: the mode persists. Switching needs the file to itself, and
    SQLite answers "database is locked" at once, without its busy wait, when
    another process holds it (several processes opening a new database
    together, one of them migrating it): tried again, a moment later."""
    for attempt in range(attempts):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1 + 0.01 * attempt)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            _wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """An engine and its session factory, on a database brought to the newest
    schema revision first (backend.schema: Alembic, one process at a time)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        schema.upgrade(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    def refresh_statistics(self) -> None:
        """SQLite's planner statistics of the tables the runs list filters
        (ANALYZE: about 10 ms at 10,000 runs). Without them SQLite answers
        ``?status=succeeded`` by the status index and sorts every match (30 ms
        at 10,000 runs, growing with them); with them it walks the sort's
        index (2 ms). PostgreSQL's autovacuum keeps its own."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE runs")
            conn.exec_driver_sql("ANALYZE run_tags")

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()
