"""runs.source ("worker" or "keras": a user's own model.fit sent over REST),
runs.host (the machine an external run trains on) and runs.summary (its
model and fit settings, backend.fit_summary.FitSummary).

Every run made before is a worker's: the server default says so. Only the
missing columns are added, as 0002 and 0003 do: a database that create_all
made and that lost its alembic_version is stamped at an older revision
(backend.schema) yet has them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _columns() -> list[sa.Column]:
    return [
        sa.Column("source", sa.String(16), nullable=False, server_default="worker"),
        sa.Column("host", sa.String(200), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
    ]


def _present() -> set[str]:
    if context.is_offline_mode():
        return set()
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns("runs")}


def upgrade() -> None:
    present = _present()
    with op.batch_alter_table("runs") as batch:
        for column in _columns():
            if column.name not in present:
                batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
