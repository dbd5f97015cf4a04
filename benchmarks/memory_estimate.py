"""backend/memory_estimate.py against the real thing: the peak RSS of a
fresh process that trains one epoch of a TrainConfig with the worker's own
network (worker/training/model.py) and input pipeline (pipeline.py), on
stored PNG images of the configured size.

Each config trains in its own process (``ru_maxrss`` is a process's peak):

    .venv/bin/python -m benchmarks.memory_estimate            # the table
    .venv/bin/python -m benchmarks.memory_estimate --json out.json

Not part of ``python -m benchmarks`` (it takes minutes of CPU per config);
its figures are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CONFIGS: list[tuple[str, int, dict[str, Any]]] = [
    # name, images, TrainConfig fields
    (
        "tiny (tests' network)",
        72,
        {
            "image_size": [16, 16],
            "filters": [4, 8],
            "convs_per_block": 1,
            "dense_units": 8,
            "batch_size": 8,
        },
    ),
    ("seed-cnn (the question's)", 1024, {}),
    (
        "128² rgb, 3 blocks, flip",
        256,
        {
            "image_size": [128, 128],
            "filters": [32, 64, 128],
            "batch_size": 32,
            "augment": {"flip": True},
        },
    ),
    (
        "96² gray, sgd, dropout",
        512,
        {
            "image_size": [96, 96],
            "color_mode": "grayscale",
            "filters": [16, 32, 64, 128],
            "batch_size": 64,
            "dense_units": 1024,
            "optimizer": "sgd",
            "dropout": 0.3,
        },
    ),
    (
        "224² rgb, batch 16",
        128,
        {
            "image_size": [224, 224],
            "filters": [32, 64],
            "convs_per_block": 1,
            "batch_size": 16,
            "dense_units": 64,
        },
    ),
]
CLASSES = 4


def _child(images: int, fields: dict[str, Any]) -> dict[str, float]:
    """In a fresh process: store the images, train one epoch, report peak RSS."""
    import numpy as np
    from PIL import Image

    from backend.datasets.layout import ImageEntry
    from backend.train_config import TrainConfig
    from worker.training.model import compile_model, make_model
    from worker.training.pipeline import build_pipelines

    config = TrainConfig(**{**fields, "epochs": 1, "gap_probes": False})
    height, width = config.image_size
    mode = "RGB" if config.channels == 3 else "L"
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        entries = []
        for index in range(images):
            shape = (height, width, 3) if mode == "RGB" else (height, width)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            path = f"{index:05d}.png"
            Image.fromarray(pixels, mode=mode).save(folder / path)
            entries.append(ImageEntry(path, index % CLASSES, "", height, width, mode))
        split = int(images * 0.8)
        pipes = build_pipelines(
            folder, entries, range(split), range(split, images), config, config.seed
        )
        model = compile_model(make_model(config, CLASSES), config)
        model.fit(pipes.train, validation_data=pipes.val, epochs=1, verbose=0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"peak_mb": peak}


def _estimate(images: int, fields: dict[str, Any]) -> float:
    from backend.memory_estimate import estimate
    from backend.train_config import TrainConfig

    return estimate(TrainConfig(**fields), images, CLASSES).total_mb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        images, fields = json.loads(args.child)
        print(json.dumps(_child(images, fields)))
        return 0
    rows = []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for name, images, fields in CONFIGS:
        out = (
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.memory_estimate",
                    "--child",
                    json.dumps([images, fields]),
                ],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        peak = json.loads(out)["peak_mb"]
        estimated = _estimate(images, fields)
        rows.append(
            {
                "config": name,
                "images": images,
                "peak_rss_mb": round(peak),
                "estimate_mb": round(estimated),
                "ratio": round(estimated / peak, 2),
            }
        )
        print(
            f"{name:28} {images:5d} images  peak RSS {peak:7.0f} MiB  "
            f"estimate {estimated:7.0f} MiB  ({estimated / peak:.2f}×)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
