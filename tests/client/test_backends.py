"""The measurement core on another Keras backend: test_probes, test_samples
and test_windows again in a subprocess with KERAS_BACKEND=jax (the backend is
chosen once per process, at the first import of keras)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FILES = [
    "test_probes.py",
    "test_samples.py",
    "test_windows.py",
    "test_summary.py",
    "test_spool.py",
    "test_transport.py",
    "test_sync.py",
    "test_callback.py",
]


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="jax is not installed in this environment (`pip install jax` to run the "
    "client's tests under KERAS_BACKEND=jax)",
)
@pytest.mark.timeout(1500)  # every client test once more, in a fresh process
def test_the_client_core_passes_under_jax() -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, *(str(HERE / name) for name in FILES)],
        env=env,
        cwd=HERE.parent.parent,
        capture_output=True,
        text=True,
        timeout=1400,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
