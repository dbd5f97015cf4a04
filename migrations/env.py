"""Alembic's environment, configured from code (backend.schema), not alembic.ini.

Autogenerate sees only our tables (backend.schema.include_object): Optuna's,
or any other library's in the same database, are left alone.

backend.schema hands over an open connection (``config.attributes["connection"]``)
on which it holds the migration lock; offline (``curvelab migrate --sql``) only a
URL. Batch mode, so that SQLite can take the ALTERs it has no statement for.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from backend.db import Base, make_engine
from backend.schema import include_object
from backend.settings import Settings

config = context.config
target_metadata = Base.metadata


OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "render_as_batch": True,
    "include_object": include_object,
    "compare_type": True,
    "compare_server_default": True,
}


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().sqlalchemy_url


def run_offline() -> None:
    context.configure(url=_url(), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
        return
    # The plain alembic command line (alembic.ini, for writing a revision):
    # the database the CURVELAB_* settings name.
    engine = make_engine(_url())
    with engine.begin() as own:
        context.configure(connection=own, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
