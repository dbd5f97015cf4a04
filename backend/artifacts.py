"""Where a run's files live: ``DATA_DIR/runs/<id>/`` with the final model,
the best epoch's model (lowest val_loss), the history CSV and per-epoch
checkpoints. One home for these names; the worker writes them, the API
serves them."""

from __future__ import annotations

from pathlib import Path

MODEL_FILE = "model.keras"
# Updated at every epoch that lowers val_loss (weights only, with the epoch as
# an attribute), then made a whole model once the run has trained.
BEST_WEIGHTS_FILE = "best.weights.h5"
BEST_MODEL_FILE = "best.keras"
# Which weights a client asks for ("best" or "final") → the model file.
MODEL_FILES = {"best": BEST_MODEL_FILE, "final": MODEL_FILE}
HISTORY_FILE = "history.csv"
CHECKPOINTS = "checkpoints"


def run_dir(runs_root: Path, run_id: str) -> Path:
    # Run ids are server-made hex strings; refuse anything else before touching disk.
    if not (run_id.isascii() and run_id.isalnum()):
        raise ValueError(f"not a run id: {run_id!r}")
    return runs_root / run_id


def checkpoint_path(runs_root: Path, run_id: str, epoch: int) -> Path:
    return run_dir(runs_root, run_id) / CHECKPOINTS / f"epoch-{epoch:04d}.keras"


# A run folder being deleted (backend/run_deletion.py) is renamed to this
# first: ``.deleting-<run id>-<ns since the epoch>``, beside the run folders.
TRASH_PREFIX = ".deleting-"


def trash_dir(runs_root: Path, run_id: str, stamp_ns: int) -> Path:
    run_dir(runs_root, run_id)  # the same check of the id
    return runs_root / f"{TRASH_PREFIX}{run_id}-{stamp_ns}"
