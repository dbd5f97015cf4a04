"""The SQL schema's version: Alembic migrations (``migrations/``) applied at start.

Every process that opens the database (the API, each worker, ``curvelab
migrate``) upgrades it to the newest revision first, one at a time: a lock
(PostgreSQL: a transaction-scoped advisory lock; SQLite: a lock file beside
the database) makes the API and a worker starting together take turns, and
the second finds nothing left to do.

A database made before migrations existed (``create_all`` plus hand-written
``ALTER TABLE``) has no ``alembic_version``: it is stamped at the newest
revision whose columns it already has, then upgraded from there. One at a
revision this version has no file for (a newer release migrated it) is left as
it is: the migrations only add, so a worker of the previous release still runs.
"""

from __future__ import annotations

import fcntl
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

log = logging.getLogger(__name__)

# Beside the backend package, in a checkout and in site-packages alike.
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
# pg_advisory_xact_lock's key: any constant that no other code in the database uses.
_PG_LOCK_KEY = 0x6375_7276  # "curv"
# What a pre-migration database's runs table has, newest first: the revision it matches.
_ADOPT: tuple[tuple[str, frozenset[str]], ...] = (
    ("0003", frozenset({"metrics_version", "attempt", "holder", "deaths", "queued_at"})),
    ("0002", frozenset({"metrics_version", "attempt"})),
)
_BASELINE = "0001"
_BASELINE_TABLES = frozenset({"datasets", "runs", "epoch_metrics", "batch_metrics", "evaluations"})


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Only our tables and what hangs on them: another library's in the same
    database (Optuna's study tables, say) are neither dropped nor diffed."""
    from backend.db import Base  # backend.db opens databases through this module

    if type_ == "table":
        return name in Base.metadata.tables
    table = getattr(obj, "table", None)
    return table is None or table.name in Base.metadata.tables


@dataclass(frozen=True)
class Upgrade:
    """What one upgrade did: ``stamped`` a pre-migration database at that
    revision, then applied ``applied`` (oldest first)."""

    before: str | None
    after: str
    stamped: str | None
    applied: list[str]


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    config = Config(stdout=io.StringIO())
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@cache
def head() -> str:
    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if found is None:
        raise RuntimeError(f"no migrations under {MIGRATIONS_DIR}")
    return found


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for a new (or pre-migration) one."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database to the newest revision (a no-op when it is there)."""
    now = current(engine)
    if now == head() or _newer(now):
        return Upgrade(now, now or head(), None, [])
    with _locked(engine) as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        if before == head() or _newer(before):
            return Upgrade(before, before or head(), None, [])  # another process did it
        stamped = None
        config = alembic_config(connection=connection)
        if before is None:
            stamped = _adopt(connection)
            if stamped is not None:
                command.stamp(config, stamped)
                log.info("database made before migrations: stamped at revision %s", stamped)
        start = before or stamped
        applied = _between(start, head())
        if applied:
            command.upgrade(config, "head")
            log.info("database upgraded to %s (applied %s)", head(), ", ".join(applied))
    return Upgrade(before, head(), stamped, applied)


def upgrade_sql(url: str) -> str:
    """The SQL that upgrading a new database to the newest revision runs (offline)."""
    config = alembic_config(url)
    out = io.StringIO()
    config.output_buffer = out
    command.upgrade(config, "head", sql=True)
    return out.getvalue()


def _newer(revision: str | None) -> bool:
    """A revision this version has no file for: a newer curvelab migrated the
    database. Its migrations only add, so this one may still run on it (a
    worker of the previous release during a rolling upgrade); it changes nothing."""
    if revision is None or revision in _revisions():
        return False
    log.warning(
        "the database is at schema revision %s, newer than this version knows (%s): "
        "left as it is; upgrade curvelab",
        revision,
        head(),
    )
    return True


@cache
def _revisions() -> tuple[str, ...]:
    """Every revision, oldest first."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return tuple(reversed([s.revision for s in scripts.walk_revisions()]))


def _between(start: str | None, end: str) -> list[str]:
    """Revisions after ``start`` up to ``end``, oldest first."""
    found = list(_revisions())
    found = found[: found.index(end) + 1]
    return found[found.index(start) + 1 :] if start in found else found


def _adopt(connection: Connection) -> str | None:
    """The revision a database without ``alembic_version`` matches, or None
    (new, or older than the baseline: the baseline creates what is missing)."""
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    if "runs" not in tables or not tables >= _BASELINE_TABLES:
        return None
    columns = {column["name"] for column in inspector.get_columns("runs")}
    for revision, needs in _ADOPT:
        if columns >= needs:
            return revision
    return _BASELINE


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that no other process migrates beside."""
    if engine.dialect.name == "sqlite":
        with _file_lock(engine.url.database), engine.connect() as connection:
            # Off for the migration (it cannot change inside a transaction), as
            # SQLite's own procedure for altering a table says: batch mode
            # copies a table and drops the old one, and with foreign keys on,
            # dropping ``runs`` would cascade to every metric row.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
            try:
                with connection.begin():
                    # pysqlite opens no transaction for DDL on its own: one of
                    # ours makes the whole upgrade commit or roll back as one.
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                    yield connection
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        raise RuntimeError(f"the migration broke a foreign key: {tuple(broken)}")
            finally:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Held until this transaction ends, which is when the migration is committed.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        yield connection


@contextmanager
def _file_lock(database: str | None) -> Iterator[None]:
    # An in-memory database has no other process to race with.
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    # A file of its own: SQLite's own locks on the database file are POSIX
    # record locks, which closing any other descriptor of that file would drop.
    path = Path(database).with_name(Path(database).name + ".migrate-lock")
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
