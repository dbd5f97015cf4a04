"""runs.metrics_version (what GET /metrics's ETag names) and runs.attempt (the
fencing token of the delivery that trains the run).

A database adopted from before migrations may hold one of them already
(add_new_columns added them one release apart): only the missing are added.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("metrics_version", "attempt")


def _present() -> set[str]:
    if context.is_offline_mode():
        return set()
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns("runs")}


def upgrade() -> None:
    present = _present()
    with op.batch_alter_table("runs") as batch:
        for name in COLUMNS:
            if name not in present:
                batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
