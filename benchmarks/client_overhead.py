"""What ``curvelab.Callback`` costs a user's own ``model.fit``.

The hand-written script of ``bare_keras.py`` (the same images and network as
``overhead.py``) is trained three ways, each in its own process:

- ``keras``: the script alone;
- ``callback, probes off``: the script with ``curvelab.Callback(probes=False)``
  sending to the real API under uvicorn (batch points, epochs, the run's
  create and finish, all on the callback's sender thread);
- ``callback, probes on``: the same with ``probe_data`` — 512 training images,
  and the validation arrays — so the gap probes run in the user's process.

As in ``overhead.py`` the three take turns one epoch at a time, in an order
that rotates each round, and the goal is checked on the process's CPU time
(all its threads, the sender's included): the median of each epoch's ratio to
the baseline's epoch of the same round, epochs 2..N.

    .venv/bin/python -m benchmarks.client_overhead [--epochs 6]
"""

from __future__ import annotations

import argparse
import os
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks import overhead
from benchmarks.fixtures import Workspace, api_server, workspace
from benchmarks.overhead import KERAS, Result, in_turns, paced, quiet
from benchmarks.report import Row, at_most, format_table, median, paired_ratios

OFF, ON = "callback, probes off", "callback, probes on"
PROBE_IMAGES = 512
GOALS = {OFF: 1.03, ON: 1.08}


def measure(space: Workspace, epochs: int, dataset_id: str | None = None) -> Result:
    from benchmarks.fixtures import stored_dataset

    dataset_id = dataset_id or stored_dataset(space, overhead.PER_CLASS)
    folder = str(space.settings.datasets_dir / dataset_id)
    with api_server(space) as api:
        specs = {
            KERAS: {"kind": KERAS},
            OFF: {"kind": OFF, "url": api.url},
            ON: {"kind": ON, "url": api.url},
        }
        for number, spec in enumerate(specs.values()):
            spec.update(folder=folder, epochs=epochs, spool=str(space.root / "spool"))
            spec["run_id_file"] = str(space.root / f"run-id-{number}")
        seconds, cpu_seconds = in_turns(_child, specs, epochs, grace=120)
    run_id_file = Path(specs[ON]["run_id_file"])
    run_id = run_id_file.read_text() if run_id_file.exists() else None
    probe_seconds = _probe_seconds(space, run_id)
    return Result(seconds=seconds, cpu_seconds=cpu_seconds, probe_seconds=probe_seconds)


def _probe_seconds(space: Workspace, run_id: str | None) -> list[float]:
    """The probes' own time per epoch, as the server recorded it: the run made it."""
    if run_id is None:
        return []
    from backend import runs

    with space.db.session() as session:
        recorded = runs.epoch_rows(session, run_id)
    return [float(row.get("probe_seconds") or 0.0) for row in recorded]


def rows(result: Result) -> list[Row]:
    base = result.seconds[KERAS][1:]
    base_cpu = result.cpu_seconds[KERAS][1:]
    out = []
    for name, limit in GOALS.items():
        ours, ours_cpu = result.seconds[name][1:], result.cpu_seconds[name][1:]
        out.append(
            Row(
                f"user's fit + Callback, epoch CPU time, {name.split(', ')[1]} (s)",
                median(base_cpu),
                median(ours_cpu),
                goal=f"≤ {limit:.2f}×",
                check=at_most(limit),
                ratio_value=median(paired_ratios(ours_cpu, base_cpu)),
            )
        )
        out.append(Row("  epoch wall time (s)", quiet(base), quiet(ours), goal="info (noisy)"))
    if result.probe_seconds[1:]:
        share = quiet(result.probe_seconds[1:]) / quiet(result.seconds[ON][1:])
        out.append(Row("  gap probes' share of an epoch (wall)", None, share, goal="info"))
    return out


# -- in the child processes ------------------------------------------------------------


def _child(conn: Connection, spec: dict[str, Any]) -> None:
    try:
        run_id = _fit(conn, spec)
        if run_id:
            Path(spec["run_id_file"]).write_text(run_id)
        conn.send(("finished", None))
    except BaseException as exc:
        conn.send((f"failed: {type(exc).__name__}: {exc}", None))
        raise


def _fit(conn: Connection, spec: dict[str, Any]) -> str | None:
    os.environ["CURVELAB_SPOOL_DIR"] = spec["spool"]
    import keras

    from benchmarks import bare_keras

    callbacks: list[keras.callbacks.Callback] = [paced(conn)]
    callback = None
    if spec["kind"] != KERAS:
        import curvelab

        net = bare_keras.Network()
        probe_data = None
        validation = None
        if spec["kind"] == ON:
            # The user's own arrays, as a script has them (loaded again here,
            # before the fit: outside every timed epoch).
            images, labels = bare_keras.load_images(Path(spec["folder"]), (50, 55))
            train_idx, val_idx = bare_keras.split(labels, net.validation_split, net.seed)
            x = images.astype("float32") / 255.0
            probe_data = (x[train_idx][:PROBE_IMAGES], labels[train_idx][:PROBE_IMAGES])
            validation = (x[val_idx], labels[val_idx])
        callback = curvelab.Callback(
            name=f"benchmark: {spec['kind']}",
            url=spec["url"],
            probe_data=probe_data,
            validation_data=validation,
            probes=spec["kind"] == ON,
        )
        # After the pacing callback: its epoch-end work is inside the timed epoch.
        callbacks.append(callback)
    bare_keras.train(Path(spec["folder"]), spec["epochs"], callbacks=callbacks)
    return None if callback is None else callback.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    with workspace() as space:
        print(format_table(rows(measure(space, args.epochs))))


if __name__ == "__main__":
    main()
