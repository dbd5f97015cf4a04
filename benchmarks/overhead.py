"""Training overhead: curvelab's worker against a hand-written Keras script.

The same images (30 classes, 50×55 RGB, about 6400 training images) and the
same network (seed-cnn-small) are trained three ways, each in its own process:

- ``keras``: ``bare_keras.py``, Pillow + numpy + ``model.fit``;
- ``probes off``: curvelab's ``run_training`` with a real SQLite database and
  Redis (recorder, checkpoints, SQL rows, events), ``gap_probes=False``;
- ``probes on``: the same with the gap probes.

The three take turns, one epoch each (a round), in an order that rotates each
round, so that whatever else loads the machine falls on all of them alike. An
epoch is timed from its start to the next epoch's start (or the end of fit):
everything curvelab does at an epoch's end counts. Before curvelab hands the
CPU on, its background writer (checkpoint, SQL row, event) is drained and
that wait counts too: on this machine the figure is an upper bound.

Two figures per variant, over epochs 2..N. The goal is checked on the
process's CPU time (all its threads): the median of each epoch's ratio to
the baseline's epoch of the same round. Wall time is shown beside it, each
variant's lower quartile, but on the shared VM these figures come from it
does not resolve a few percent: epochs stall for up to 10× their length
while both CPUs sit idle (benchmarks/README.md), and CPU time does not count
a stall. CPU time undercounts work that runs on one core while training
would use two, so the README also gives the training thread's share.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from backend import runs
from backend.train_config import PRESETS, TrainConfig
from benchmarks.fixtures import Workspace, queued_run, stored_dataset
from benchmarks.report import Row, at_most, median, paired_ratios, percentile

PER_CLASS = 267  # 30 × 267 images, 20% held out: 6420 to train, 1590 to validate
KERAS, OFF, ON = "keras", "probes off", "probes on"


@dataclass(frozen=True)
class Result:
    seconds: dict[str, list[float]]  # wall time per variant, per epoch (epoch 1 included)
    cpu_seconds: dict[str, list[float]]  # the process's CPU time, likewise
    probe_seconds: list[float]  # the probes' own time, per epoch (probes on)


def config(epochs: int, probes: bool) -> TrainConfig:
    return PRESETS["seed-cnn-small"][1].model_copy(update={"epochs": epochs, "gap_probes": probes})


def measure(space: Workspace, epochs: int, dataset_id: str | None = None) -> Result:
    dataset_id = dataset_id or stored_dataset(space, PER_CLASS)
    folder = space.settings.datasets_dir / dataset_id
    specs: dict[str, dict[str, Any]] = {
        KERAS: {"kind": KERAS, "folder": str(folder), "epochs": epochs},
    }
    for name, probes in ((OFF, False), (ON, True)):
        run_id = queued_run(space, dataset_id, config(epochs, probes), name)
        specs[name] = {"kind": "curvelab", "run_id": run_id, "env": space.env}
    seconds, cpu_seconds = in_turns(_child, specs, epochs)
    with space.db.session() as session:
        recorded = runs.epoch_rows(session, specs[ON]["run_id"])
    probe_seconds = [float(row.get("probe_seconds") or 0.0) for row in recorded]
    return Result(seconds=seconds, cpu_seconds=cpu_seconds, probe_seconds=probe_seconds)


def in_turns(
    child: Callable[[Connection, dict[str, Any]], None],
    specs: dict[str, dict[str, Any]],
    epochs: int,
    grace: float = 60,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Start ``child(conn, spec)`` for each variant in its own spawned process
    (TensorFlow must not be forked), let them train one epoch at a time, and
    give each variant's wall and CPU seconds per epoch."""
    context = mp.get_context("spawn")
    pipes: dict[str, Connection] = {}
    processes = []
    for name, spec in specs.items():
        ours, theirs = context.Pipe()
        process = context.Process(target=child, args=(theirs, spec), name=f"bench-{name}")
        process.start()
        theirs.close()
        pipes[name] = ours
        processes.append(process)
    try:
        return _take_turns(pipes, epochs)
    finally:
        for process in processes:
            process.join(grace)
            if process.is_alive():
                process.kill()


def _take_turns(
    pipes: dict[str, Connection], epochs: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    names = list(pipes)
    for name in names:  # each child says it is ready at its first epoch's start
        message, _ = pipes[name].recv()
        if message != "ready":
            raise RuntimeError(f"{name}: {message}")
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(epochs):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            pipes[name].send("go")
            message, value = pipes[name].recv()
            if message not in {"epoch", "done"}:
                raise RuntimeError(f"{name}: {message}")
            seconds[name].append(value[0])
            cpu_seconds[name].append(value[1])
            if message == "done":
                pipes[name].recv()  # its run is wrapped up: the next turn runs alone
    return seconds, cpu_seconds


def rows(result: Result) -> list[Row]:
    base = result.seconds[KERAS][1:]
    base_cpu = result.cpu_seconds[KERAS][1:]
    out = []
    for name, limit in ((OFF, 1.03), (ON, 1.08)):
        ours, ours_cpu = result.seconds[name][1:], result.cpu_seconds[name][1:]
        out.append(
            Row(
                f"epoch CPU time, {name} (s)",
                median(base_cpu),
                median(ours_cpu),
                goal=f"≤ {limit:.2f}×",
                check=at_most(limit),
                ratio_value=median(paired_ratios(ours_cpu, base_cpu)),
            )
        )
        out.append(
            Row(f"  epoch wall time, {name} (s)", quiet(base), quiet(ours), goal="info (noisy)")
        )
    if result.probe_seconds[1:]:
        share = quiet(result.probe_seconds[1:]) / quiet(result.seconds[ON][1:])
        out.append(Row("  gap probes' share of an epoch (wall)", None, share, goal="info"))
    return out


def quiet(seconds: list[float]) -> float:
    """The lower quartile: other load on a shared machine only ever lengthens
    an epoch, so the faster epochs are the ones that measure the training."""
    return percentile(seconds, 25)


# -- in the child processes ------------------------------------------------------------


def _child(conn: Connection, spec: dict[str, Any]) -> None:
    try:
        if spec["kind"] == KERAS:
            _bare(conn, spec)
        else:
            _curvelab(conn, spec)
        conn.send(("finished", None))
    except BaseException as exc:
        conn.send((f"failed: {type(exc).__name__}: {exc}", None))
        raise


class _Turns:
    """Waits for the coordinator's go at each epoch start and reports the time
    since the previous go."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.started: tuple[float, float] | None = None

    def next_epoch(self) -> None:
        self.conn.send(("ready", None) if self.started is None else ("epoch", self._elapsed()))
        self.conn.recv()
        self.started = time.perf_counter(), time.process_time()

    def done(self) -> None:
        self.conn.send(("done", self._elapsed()))

    def _elapsed(self) -> tuple[float, float]:
        if self.started is None:
            raise RuntimeError("no epoch started")
        wall, cpu = self.started
        return time.perf_counter() - wall, time.process_time() - cpu


def paced(conn: Connection) -> Any:
    """A Keras callback that waits for its turn at each epoch start and
    reports each epoch's time (keras imported here: in the child only)."""
    import keras

    turns = _Turns(conn)

    class Paced(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            turns.next_epoch()

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            turns.done()

    return Paced()


def _bare(conn: Connection, spec: dict[str, Any]) -> None:
    from pathlib import Path

    from benchmarks import bare_keras

    bare_keras.train(Path(spec["folder"]), spec["epochs"], callbacks=[paced(conn)])


def _curvelab(conn: Connection, spec: dict[str, Any]) -> None:
    import os

    os.environ.update(spec["env"])
    from redis import Redis

    from backend.db import Database
    from backend.settings import Settings
    from worker.training import runner
    from worker.training.recorder import RunRecorder

    turns = _Turns(conn)

    class PacedRecorder(RunRecorder):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.flush()  # the previous epoch's checkpoint, SQL row and event
            turns.next_epoch()
            super().on_epoch_begin(epoch, logs)

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            super().on_train_end(logs)
            turns.done()

    runner.RunRecorder = PacedRecorder  # type: ignore[misc]
    settings = Settings()
    db = Database(settings.sqlalchemy_url)
    redis = Redis.from_url(settings.redis_url)
    status = runner.run_training(spec["run_id"], settings, db, redis)
    if status != "succeeded":
        raise RuntimeError(f"run ended {status}")
