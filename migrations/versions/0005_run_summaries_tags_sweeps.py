"""The runs list at scale, tidying up, and sweeps.

- runs: summary columns (best val_loss and val_accuracy with their epochs,
  training seconds, images/s: backend.run_summary), indexed where the list
  sorts; notes; sweep_id and trial_number; an index on created_at.
- run_tags: one row per tag of a run (an indexed filter on every database).
- sweeps: runs an Optuna study chooses (backend.sweeps). Optuna's own tables
  live in the same database and are not ours (backend.schema.include_object).

The summaries of the runs made before are filled from their epoch rows, by
the same rule the app keeps them with (backend.run_summary.summarise).

Only what is missing is made, as 0002-0004 do: a database that create_all
made and that lost its alembic_version is stamped at an older revision
(backend.schema) yet has these tables, columns and indexes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from backend.run_summary import summarise

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXED = ("best_val_loss", "best_val_accuracy", "duration_s", "created_at", "sweep_id")


def _columns() -> list[sa.Column]:
    return [
        sa.Column("best_val_loss", sa.Float(), nullable=True),
        sa.Column("best_val_loss_epoch", sa.Integer(), nullable=True),
        sa.Column("best_val_accuracy", sa.Float(), nullable=True),
        sa.Column("best_val_accuracy_epoch", sa.Integer(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("images_per_sec", sa.Float(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("sweep_id", sa.String(32), nullable=True),
        sa.Column("trial_number", sa.Integer(), nullable=True),
    ]


def _present() -> tuple[set[str], set[str], set[str], bool]:
    """Tables, runs' columns, runs' indexes, and whether runs.sweep_id has its key."""
    if context.is_offline_mode():
        return set(), set(), set(), False
    inspector = sa.inspect(op.get_bind())
    keyed = any(
        key["constrained_columns"] == ["sweep_id"] for key in inspector.get_foreign_keys("runs")
    )
    return (
        set(inspector.get_table_names()),
        {c["name"] for c in inspector.get_columns("runs")},
        {i["name"] for i in inspector.get_indexes("runs")},
        keyed,
    )


def upgrade() -> None:
    tables, present, indexes, keyed = _present()
    if "sweeps" not in tables:
        _create_sweeps()
    if "run_tags" not in tables:
        _create_run_tags()
    # Batch mode: SQLite copies the table to add a foreign key, with its
    # foreign keys off (backend.schema), so the old table's drop cascades nowhere.
    # Offline (`curvelab migrate --sql`) SQLite has no table to copy: the SQL
    # shown adds the columns and indexes, without the foreign key.
    offline_sqlite = context.is_offline_mode() and op.get_context().dialect.name == "sqlite"
    with op.batch_alter_table("runs", recreate="never" if offline_sqlite else "auto") as batch:
        for column in _columns():
            if column.name not in present:
                batch.add_column(column)
        if not keyed and not offline_sqlite:
            batch.create_foreign_key(
                "fk_runs_sweep_id_sweeps", "sweeps", ["sweep_id"], ["id"], ondelete="SET NULL"
            )
        for name in _INDEXED:
            if f"ix_runs_{name}" not in indexes:
                batch.create_index(f"ix_runs_{name}", [name])
    if not context.is_offline_mode():
        _fill_summaries()


def _create_sweeps() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column(
            "dataset_id",
            sa.String(32),
            sa.ForeignKey("datasets.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("space", sa.JSON(), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("max_runs", sa.Integer(), nullable=False),
        sa.Column("parallel", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("prune", sa.String(16), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("source_run_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_sweeps_dataset_id", "sweeps", ["dataset_id"])
    op.create_index("ix_sweeps_status", "sweeps", ["status"])


def _create_run_tags() -> None:
    op.create_table(
        "run_tags",
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    op.create_index("ix_run_tags_tag", "run_tags", ["tag"])


def _fill_summaries() -> None:
    """Each existing run's summary from its epoch rows, a run at a time."""
    bind = op.get_bind()
    meta = sa.MetaData()
    runs = sa.Table("runs", meta, autoload_with=bind)
    epochs = sa.Table("epoch_metrics", meta, autoload_with=bind)
    ids = bind.execute(sa.select(epochs.c.run_id).distinct()).scalars().all()
    for run_id in ids:
        rows = bind.execute(
            sa.select(epochs.c.epoch, epochs.c["values"]).where(epochs.c.run_id == run_id)
        )
        found = summarise((epoch, values or {}) for epoch, values in rows)
        bind.execute(sa.update(runs).where(runs.c.id == run_id).values(**found))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in reversed(_INDEXED):
            batch.drop_index(f"ix_runs_{name}")
        batch.drop_constraint("fk_runs_sweep_id_sweeps", type_="foreignkey")
        for column in reversed(_columns()):
            batch.drop_column(column.name)
    op.drop_index("ix_run_tags_tag", "run_tags")
    op.drop_table("run_tags")
    op.drop_index("ix_sweeps_status", "sweeps")
    op.drop_index("ix_sweeps_dataset_id", "sweeps")
    op.drop_table("sweeps")
