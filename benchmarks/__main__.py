"""``python -m benchmarks [--quick] [--only NAME ...]``: every figure, one table.

Runs the benchmarks in one scratch workspace (data dir, SQLite, a private
redis-server) and prints the table of figures (Markdown, as recorded in
benchmarks/README.md) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    api_load,
    checkpoint,
    client_overhead,
    ingest,
    input_pipeline,
    latency,
    metrics_size,
    overhead,
    runs_list,
)
from benchmarks.fixtures import Workspace, stored_dataset, workspace
from benchmarks.report import Row, format_table, machine

NAMES = (
    "overhead",
    "client",
    "checkpoint",
    "pipeline",
    "ingest",
    "latency",
    "api",
    "metrics",
    "runs_list",
    "gpu",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and rounds")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=NAMES, metavar="NAME")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    quick = args.quick
    print("machine:", "; ".join(f"{k}: {v}" for k, v in machine().items()), flush=True)
    started = time.monotonic()
    rows: list[Row] = []
    with workspace() as space:
        shared: dict[str, str] = {}

        def training_dataset() -> str:
            if "dataset" not in shared:
                shared["dataset"] = stored_dataset(space, overhead.PER_CLASS)
            return shared["dataset"]

        steps: dict[str, Callable[[], list[Row]]] = {
            "overhead": lambda: overhead.rows(
                overhead.measure(space, 5 if quick else 10, training_dataset())
            ),
            "client": lambda: client_overhead.rows(
                client_overhead.measure(space, 5 if quick else 8, training_dataset())
            ),
            "checkpoint": lambda: checkpoint.measure(3 if quick else 5),
            "pipeline": lambda: input_pipeline.measure(
                space, 2 if quick else 3, training_dataset()
            ),
            "ingest": lambda: ingest.measure(space, 1 if quick else 2),
            "latency": lambda: latency.measure(space, 12 if quick else 25),
            "api": lambda: api_load.measure(space, 1 if quick else 2, 3.0 if quick else 5.0),
            "metrics": lambda: metrics_size.measure(
                space, metrics_size.SMALL_POINTS * 2 if quick else metrics_size.POINTS
            ),
            "runs_list": lambda: runs_list.measure(space, 50 if quick else 100, 3 if quick else 5),
            "gpu": lambda: gpu_tiny(space),
        }
        for name in args.only:
            print(f"== {name}", flush=True)
            step_started = time.monotonic()
            try:
                rows += steps[name]()
            except Exception:
                traceback.print_exc()
                rows.append(Row(f"{name}: FAILED (see above)", None, None))
            print(f"   {time.monotonic() - step_started:.0f}s", flush=True)
    minutes = (time.monotonic() - started) / 60
    print(
        f"\nload average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"{minutes:.1f} min in all\n"
    )
    print(format_table(rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                [{**vars(row), "check": None, "ratio": row.ratio, "ok": row.ok} for row in rows],
                indent=2,
            )
        )


def gpu_tiny(space: Workspace) -> list[Row]:
    """``gpu.py --tiny`` in its own process: the GPU script, small, on this CPU."""
    output = space.root / "gpu.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "benchmarks.gpu", "--tiny", "--json", str(output)]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, timeout=900)
    result = json.loads(output.read_text())
    rate = result["images_per_sec"]
    where = "tiny, CPU" if "CPU only" in result["device"] else result["device"]
    return [
        Row(
            f"gpu.py ({where}): fp32 (images/s)",
            rate["keras fp32"],
            rate["curvelab fp32"],
            goal="info; GPU figures to record",
        ),
        Row(
            "  mixed precision (images/s)", rate["keras mixed"], rate["curvelab mixed"], goal="info"
        ),
        Row(
            "  curvelab: fp32 → mixed (images/s)",
            rate["curvelab fp32"],
            rate["curvelab mixed"],
            goal="info",
        ),
        Row(
            "  curvelab: mixed → mixed + XLA (images/s)",
            rate["curvelab mixed"],
            rate["curvelab mixed + XLA"],
            goal="info",
        ),
    ]


if __name__ == "__main__":
    main()
