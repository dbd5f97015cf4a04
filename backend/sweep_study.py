"""Where a sweep's Optuna study lives, and how the API and workers open it.

Optuna's RDBStorage is on the project's database server, beside our tables
but not among them: Optuna keeps its own Alembic ``alembic_version`` table,
the same name as ours, and refuses a database whose revision it does not
know (and ``optuna storage upgrade`` would stamp over ours). So SQLite gets
a sibling file (``curvelab.db`` -> ``curvelab-optuna.db``), PostgreSQL a
schema of its own (``optuna``, through the connection's ``search_path``).
A sibling file also means a transaction that holds a sweep's row in our
SQLite file (backend/sweeps.py) never waits on Optuna's writes, nor they on it.

Samplers and pruners are not stored by Optuna: they are rebuilt from the
sweep's row each time a study is opened. A seeded sampler is reseeded with
the number of trials already made, so that reopening it does not repeat
the first trial's values.
"""

from __future__ import annotations

import contextlib
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from backend.db import Sweep
from backend.settings import Settings

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "Trial 3 finished" per trial

STUDY_PREFIX = "curvelab-sweep-"
PG_SCHEMA = "optuna"
# A trial's user attr: the index of a "list" sweep's variant it runs.
VARIANT_ATTR = "variant"


def study_name(sweep_id: str) -> str:
    return f"{STUDY_PREFIX}{sweep_id}"


def storage_url(database_url: str) -> str:
    """Optuna's storage URL for the project's database URL (see the module doc)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("sweeps need a SQLite file, not an in-memory database")
        path = Path(url.database)
        return url.set(
            database=str(path.with_name(f"{path.stem}-optuna{path.suffix}"))
        ).render_as_string(hide_password=False)
    return database_url


@lru_cache(maxsize=4)
def _storage(database_url: str) -> optuna.storages.RDBStorage:
    """One storage (an engine and its pool) per process and database."""
    url = storage_url(database_url)
    kwargs: dict[str, Any]
    if make_url(url).get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"timeout": 30}}
    else:
        _ensure_schema(url)
        kwargs = {
            "connect_args": {"options": f"-c search_path={PG_SCHEMA}"},
            "pool_pre_ping": True,
        }
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _ensure_schema(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
    except SQLAlchemyError as exc:  # two processes creating it at once: one wins
        log.info("schema %s: %s", PG_SCHEMA, exc)
    finally:
        engine.dispose()


def storage(settings: Settings) -> optuna.storages.RDBStorage:
    return _storage(settings.sqlalchemy_url)


def sampler(sweep: Sweep, trials_made: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler. grid and list trials are enqueued with their
    values fixed (backend/sweeps.py), so any sampler serves them."""
    seed = sweep.options.get("seed")
    if seed is not None:
        seed = (int(seed) + trials_made) % 2**32
    if sweep.method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    startup = int(sweep.options.get("startup_runs", 2))
    warmup = int(sweep.options.get("warmup_epochs", 1))
    if sweep.prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if sweep.prune == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, warmup), reduction_factor=3, min_early_stopping_rate=0
        )
    return optuna.pruners.NopPruner()


def create(settings: Settings, sweep: Sweep) -> optuna.Study:
    return optuna.create_study(
        storage=storage(settings),
        study_name=study_name(sweep.id),
        direction=sweep.direction,
        sampler=sampler(sweep),
        pruner=pruner(sweep),
    )


def load(settings: Settings, sweep: Sweep) -> optuna.Study:
    """The sweep's study; its sampler reseeded for the trials made so far."""
    study = optuna.load_study(
        study_name=study_name(sweep.id), storage=storage(settings), pruner=pruner(sweep)
    )
    study.sampler = sampler(sweep, len(study.get_trials(deepcopy=False)))
    return study


def delete(settings: Settings, sweep_id: str) -> None:
    """Forget a sweep's study (none: nothing to do)."""
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=study_name(sweep_id), storage=storage(settings))
