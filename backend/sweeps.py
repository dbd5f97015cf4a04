"""Sweeps: runs of one dataset and base config that an Optuna study chooses.

The study (backend/sweep_study.py) owns the trials through Optuna's
ask-and-tell interface; this module turns a trial into a queued run and a
final run back into a told trial. ``advance`` is the one loop that does both:
idempotent, safe from any process at any time (the API on create and
cancel, a worker after each run, every worker's sweeper now and then). Each
of its steps is one transaction that first updates the sweep's row, which
holds it (PostgreSQL: the row; SQLite: the file) until the step commits, so
two processes advancing the same sweep take turns: no trial is asked twice
for one free slot. A trial is told once: only while Optuna still has it
RUNNING. A trial asked but whose run was never made (the process died in
between) is failed, and a grid or list point it held enqueued again.

grid and list sweeps enqueue every trial at creation, in the declared order
(the first knob slowest), so the order is deterministic; random and tpe
ask the sampler for each new run.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery
from optuna.trial import FrozenTrial, Trial, TrialState
from redis import Redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend import events, runs, sweep_space, sweep_study
from backend.api.sweep_schemas import Range, SweepCreate, Variant
from backend.db import Dataset, Run, Sweep, utcnow
from backend.queue import enqueue_training
from backend.settings import Settings
from backend.sweep_space import Knob, SpaceError
from backend.sweep_view import best_values
from backend.train_config import TrainConfig, read_stored_config

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
ENQUEUED = ("grid", "list")  # methods whose trials are all enqueued at creation
DEFAULT_RANDOM_RUNS = 10
MAX_LAUNCHES = 65  # one more than SweepCreate's largest ``parallel``: a bound, never reached


class SweepError(Exception):
    """A sweep that cannot be made as asked: the route's status code and detail."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


# -- creating ------------------------------------------------------------------


def _plan(body: SweepCreate) -> tuple[int, list[tuple[dict[str, Any], dict[str, Any]]]]:
    """The budget and the trials to enqueue (params, user attrs), checked."""
    base = body.config
    if body.method == "list":
        if body.space:
            raise SpaceError("space: a list sweep takes `variants`, not a space")
        if not body.variants:
            raise SpaceError("variants: a list sweep needs at least one variant")
        for i, variant in enumerate(body.variants):
            sweep_space.checked(base, variant.patch, f'variants[{i}] "{variant.label}"')
        budget = min(body.max_runs or len(body.variants), len(body.variants))
        return budget, [({}, {sweep_study.VARIANT_ATTR: i}) for i in range(budget)]
    if body.variants:
        raise SpaceError("variants: only a list sweep takes variants")
    if not body.space:
        raise SpaceError("space: give at least one knob to sweep")
    knobs = sweep_space.parse_space(base, body.space)
    if body.method != "grid":
        return body.max_runs or DEFAULT_RANDOM_RUNS, []
    for knob in knobs:
        if knob.values is None:
            raise SpaceError(
                f"space.{knob.name}: a grid sweep takes lists of values only; "
                "use method random or tpe for a range"
            )
    size = sweep_space.grid_size(knobs)
    budget = min(body.max_runs or size, size)
    trials: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for combination in itertools.islice(sweep_space.grid(knobs), budget):
        what = f"the combination {sweep_space.describe(combination)}"
        sweep_space.checked(base, combination, what)
        params = {knob.name: knob.encode(combination[knob.name]) for knob in knobs}
        trials.append((params, {}))
    return budget, trials


def _space_json(space: Mapping[str, list[Any] | Range]) -> dict[str, Any]:
    return {k: v.model_dump() if isinstance(v, Range) else v for k, v in space.items()}


def create_sweep(
    session: Session,
    settings: Settings,
    celery: Celery,
    dataset: Dataset,
    body: SweepCreate,
    source_run_id: str | None = None,
) -> Sweep:
    """Check the space, store the sweep and its study, launch its first runs."""
    try:
        budget, trials = _plan(body)
    except SpaceError as exc:
        raise SweepError(422, str(exc)) from None
    knobs = ", ".join(body.space) or "variants"
    sweep = Sweep(
        name=body.name or f"{body.method} sweep of {knobs}"[:200],
        dataset_id=dataset.id,
        config=body.config.model_dump(mode="json"),
        space=_space_json(body.space),
        variants=[v.model_dump() for v in body.variants] if body.variants else None,
        method=body.method,
        max_runs=budget,
        parallel=body.parallel,
        metric=body.metric,
        direction=body.direction or ("maximize" if "acc" in body.metric else "minimize"),
        prune=body.prune,
        options={
            "startup_runs": body.prune_startup_runs,
            "warmup_epochs": body.prune_warmup_epochs,
            "seed": body.seed,
        },
        status="running",
        source_run_id=source_run_id,
    )
    session.add(sweep)
    session.flush()  # its id names the study
    try:
        study = sweep_study.create(settings, sweep)
        for params, attrs in trials:
            study.enqueue_trial(params, user_attrs=attrs)
    except Exception as exc:
        session.rollback()
        log.exception("sweep %s: could not store its study", sweep.id)
        raise SweepError(503, f"the sweep's study could not be stored: {exc}") from exc
    session.commit()
    advance_quietly(session, settings, celery, sweep.id)
    session.refresh(sweep)
    return sweep


# -- advancing -----------------------------------------------------------------


def advance_quietly(session: Session, settings: Settings, celery: Celery, sweep_id: str) -> None:
    """``advance``, its failures logged: every caller has a later chance
    (the sweepers of the workers advance every running sweep now and then)."""
    try:
        advance(session, settings, celery, sweep_id)
    except Exception:
        session.rollback()
        log.exception("sweep %s: could not advance it", sweep_id)


def advance(session: Session, settings: Settings, celery: Celery, sweep_id: str) -> list[str]:
    """Tell the study what finished, launch runs into free slots, finish the
    sweep when its budget is spent. Returns the ids of the runs launched."""
    launched: list[str] = []
    for _ in range(MAX_LAUNCHES):
        run_id = _step(session, settings, sweep_id)
        if run_id is None:
            break
        launched.append(run_id)
        try:
            enqueue_training(celery, run_id)
        except Exception as exc:
            runs.finish(session, None, run_id, "failed", error=f"could not queue the run: {exc}")
            log.warning("sweep %s: run %s could not be queued: %s", sweep_id, run_id, exc)
            break  # the broker is away: not the rest of the budget after it
    return launched


def _step(session: Session, settings: Settings, sweep_id: str) -> str | None:
    """One transaction: tell, recover, finish or launch one run (its id)."""
    held = session.execute(update(Sweep).where(Sweep.id == sweep_id).values(status=Sweep.status))
    if not getattr(held, "rowcount", 0):
        session.rollback()
        return None
    sweep = session.get(Sweep, sweep_id)
    assert sweep is not None
    session.refresh(sweep)
    rows = session.execute(
        select(Run.id, Run.status, Run.trial_number).where(Run.sweep_id == sweep_id)
    ).all()
    study = sweep_study.load(settings, sweep)
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    _tell_finished(session, study, sweep, rows, trials)
    requeued = _recover_orphans(study, rows, trials)
    active = sum(row.status in ACTIVE for row in rows)
    if sweep.status != "running":
        session.commit()
        return None
    waiting = requeued or any(t.state == TrialState.WAITING for t in trials.values())
    if len(rows) >= sweep.max_runs or (sweep.method in ENQUEUED and not waiting):
        if active == 0:
            sweep.status, sweep.finished_at = "finished", utcnow()
        session.commit()
        return None
    if active >= sweep.parallel:
        session.commit()
        return None
    dataset = session.get(Dataset, sweep.dataset_id) if sweep.dataset_id else None
    if dataset is None:
        _fail(session, sweep, "its dataset was deleted")
        return None
    base = read_stored_config(sweep.config).config
    knobs = _knobs(sweep, base)
    trial = study.ask({knob.name: knob.distribution() for knob in knobs})
    try:
        config, name = _trial_config(sweep, base, knobs, trial)
    except SpaceError as exc:
        study.tell(trial, state=TrialState.FAIL)
        _fail(session, sweep, str(exc))
        return None
    run = runs.create_run(
        session, dataset, config, name, sweep_id=sweep.id, trial_number=trial.number
    )
    return run.id


def _fail(session: Session, sweep: Sweep, error: str) -> None:
    sweep.status, sweep.error, sweep.finished_at = "failed", error, utcnow()
    session.commit()
    log.warning("sweep %s failed: %s", sweep.id, error)


def _knobs(sweep: Sweep, base: TrainConfig) -> list[Knob]:
    if sweep.method == "list":
        return []
    space = {
        k: Range.model_validate(v) if isinstance(v, dict) else v for k, v in sweep.space.items()
    }
    return sweep_space.parse_space(base, space)


def _trial_config(
    sweep: Sweep, base: TrainConfig, knobs: list[Knob], trial: Trial
) -> tuple[TrainConfig, str]:
    if sweep.method == "list":
        index = trial.user_attrs.get(sweep_study.VARIANT_ATTR)
        variants = sweep.variants or []
        if not isinstance(index, int) or not 0 <= index < len(variants):
            raise SpaceError(f"trial {trial.number} names no variant of the sweep")
        variant = Variant.model_validate(variants[index])
        config = sweep_space.checked(base, variant.patch, f'the variant "{variant.label}"')
        return config, variant.label
    params = {knob.name: knob.decode(trial.params[knob.name]) for knob in knobs}
    described = sweep_space.describe(params)
    config = sweep_space.checked(base, params, f"trial {trial.number} ({described})")
    return config, described


def _tell_finished(
    session: Session,
    study: Any,
    sweep: Sweep,
    rows: Iterable[Any],
    trials: Mapping[int, FrozenTrial],
) -> None:
    done = [
        row
        for row in rows
        if row.status in events.FINAL_STATUSES
        and row.trial_number in trials
        and trials[row.trial_number].state == TrialState.RUNNING
    ]
    if not done:
        return
    values = best_values(session, sweep, [row.id for row in done])
    for row in done:
        value = values.get(row.id)
        if row.status == "pruned":
            study.tell(row.trial_number, state=TrialState.PRUNED, skip_if_finished=True)
        elif row.status == "succeeded" and value is not None:
            study.tell(row.trial_number, value, skip_if_finished=True)
        else:
            study.tell(row.trial_number, state=TrialState.FAIL, skip_if_finished=True)


def _recover_orphans(study: Any, rows: Iterable[Any], trials: Mapping[int, FrozenTrial]) -> bool:
    """Fail the trials asked whose run was never made; a fixed (grid or list)
    point is enqueued again. True when one was."""
    have = {row.trial_number for row in rows}
    requeued = False
    for number, trial in trials.items():
        if trial.state != TrialState.RUNNING or number in have:
            continue
        fixed = trial.system_attrs.get("fixed_params")
        if isinstance(fixed, dict):
            study.enqueue_trial(fixed, user_attrs=dict(trial.user_attrs))
            requeued = True
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        log.warning("trial %d was asked but got no run; failed", number)
    return requeued


def running_sweep_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Sweep.id).where(Sweep.status == "running")))


# -- cancelling ----------------------------------------------------------------


def cancel_sweep(session: Session, redis: Redis | None, sweep: Sweep) -> Sweep:
    """No new runs; every queued run cancelled now, every running one at its
    next batch. A sweep that ended already is left as it is."""
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep.id, Sweep.status == "running")
        .values(status="cancelled", finished_at=utcnow())
    )
    session.commit()
    active = session.scalars(select(Run).where(Run.sweep_id == sweep.id, Run.status.in_(ACTIVE)))
    for run in list(active):
        runs.request_cancel(session, redis, run)
    session.refresh(sweep)
    return sweep
