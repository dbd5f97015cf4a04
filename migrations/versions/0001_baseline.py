"""Baseline: the schema as curvelab made it before migrations (datasets, runs,
epoch and batch metrics, evaluations), before runs gained metrics_version.

A database made by create_all in an earlier version is stamped here (or at a
later revision its columns match) by backend.schema instead of running this.
One older than the evaluations table runs it: tables already there are kept.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _missing(table: str) -> bool:
    if context.is_offline_mode():
        return True
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _missing("datasets"):
        op.create_table(
            "datasets",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("num_images", sa.Integer(), nullable=False),
            sa.Column("classes", sa.JSON(), nullable=False),
            sa.Column("image_shapes", sa.JSON(), nullable=False),
            sa.Column("warnings", sa.JSON(), nullable=False),
        )
    if _missing("runs"):
        op.create_table(
            "runs",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column(
                "dataset_id",
                sa.String(32),
                sa.ForeignKey("datasets.id", ondelete="SET NULL"),
                nullable=True,
            ),
            sa.Column("class_names", sa.JSON(), nullable=False),
            sa.Column("config", sa.JSON(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("epochs_done", sa.Integer(), nullable=False),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("resumed_at_epoch", sa.Integer(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        )
        op.create_index("ix_runs_dataset_id", "runs", ["dataset_id"])
        op.create_index("ix_runs_status", "runs", ["status"])
    if _missing("epoch_metrics"):
        op.create_table(
            "epoch_metrics",
            sa.Column(
                "run_id",
                sa.String(32),
                sa.ForeignKey("runs.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("epoch", sa.Integer(), primary_key=True),
            sa.Column("values", sa.JSON(), nullable=False),
        )
    if _missing("batch_metrics"):
        op.create_table(
            "batch_metrics",
            sa.Column(
                "run_id",
                sa.String(32),
                sa.ForeignKey("runs.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("step", sa.Integer(), primary_key=True),
            sa.Column("epoch", sa.Float(), nullable=False),
            sa.Column("values", sa.JSON(), nullable=False),
        )
    if _missing("evaluations"):
        op.create_table(
            "evaluations",
            sa.Column(
                "run_id",
                sa.String(32),
                sa.ForeignKey("runs.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("weights", sa.String(8), primary_key=True),
            sa.Column("epoch", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("body", sa.JSON(), nullable=False),
        )


def downgrade() -> None:
    for table in ("evaluations", "batch_metrics", "epoch_metrics", "runs", "datasets"):
        op.drop_table(table)
