"""How much memory this worker may train with, and how much it uses.

The budget is ``CURVELAB_WORKER_MEMORY_MB`` when set; else a share of what
the process really has: its cgroup's memory limit (a container's, a systemd
scope's: cgroup v2 ``memory.max``, v1 ``memory.limit_in_bytes``, the
smallest along its cgroup's path), else the machine's RAM. The heartbeat
publishes it (backend/workers.py) and the API refuses a run whose estimate
exceeds it (backend/memory_estimate.py), so a run that cannot fit is never
queued to die in a loop.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from backend.settings import Settings

MIB = 1024 * 1024
# The rest is for what the budget does not see: the process's other threads,
# the page cache a dataset's files need, a neighbour on the same machine.
DEFAULT_SHARE = 0.8
# cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages).
_UNLIMITED = 1 << 60
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _UNLIMITED else None


def cgroup_limit_bytes(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT
) -> int | None:
    """The smallest memory limit on this process's cgroup path (v1 or v2),
    None when there is none. In a container the path reads "/" and the
    mount is the container's own cgroup: its files at the mount's top count."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[int] = []
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            base, name = root, "memory.max"
            if (root / "unified").is_dir() and not (root / "cgroup.controllers").exists():
                base = root / "unified"  # hybrid layout
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            limit = _read_limit(folder / name)
            if limit is not None:
                limits.append(limit)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(limits) if limits else None


def total_bytes() -> int:
    """What this worker has: its cgroup's limit, or the machine's RAM."""
    ram = int(psutil.virtual_memory().total)
    limit = cgroup_limit_bytes()
    return min(ram, limit) if limit else ram


def budget_mb(settings: Settings) -> float:
    if settings.worker_memory_mb is not None:
        return float(settings.worker_memory_mb)
    return total_bytes() * DEFAULT_SHARE / MIB


def rss_mb() -> float:
    """This process's resident memory now (the solo pool trains in it)."""
    return float(psutil.Process().memory_info().rss) / MIB
