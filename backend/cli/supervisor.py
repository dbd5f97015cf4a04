"""Start child processes, restart the ones that die, stop them all.

Small on purpose: ``curvelab up`` needs a foreman for three processes on one
machine, not a process manager. Each child runs in its own session so that a
Ctrl-C in the terminal reaches only ``curvelab``, which then stops the
children in an order it controls (the terminal's SIGINT would otherwise hit
them all at once, mid-way through their own start-up).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


def say(message: str) -> None:
    """The supervisor's own lines, to stderr so they interleave with nothing else."""
    print(f"[curvelab] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child: the same spec is used again for each restart."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    log_path: Path | None = None  # None: inherit our stdout/stderr
    cwd: Path | None = None


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    restart_at: float | None = None
    starts: int = 0


def _die_with_parent() -> None:
    """Runs in the child before exec: a SIGKILLed ``curvelab`` leaves no orphans.

    Linux only (prctl PR_SET_PDEATHSIG); elsewhere the children outlive a
    killed supervisor, as they would without this.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def spawn(spec: ChildSpec) -> subprocess.Popen[bytes]:
    """Start ``spec`` in its own session, output appended to its log file."""
    log = None
    if spec.log_path is not None:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(spec.log_path, "ab")  # noqa: SIM115 - the child keeps its own copy
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(spec.argv)}\n".encode())
        log.flush()
    try:
        return subprocess.Popen(
            list(spec.argv),
            env=spec.env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    finally:
        if log is not None:
            log.close()


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every process group, wait up to ``timeout`` in all, SIGKILL the rest."""
    alive = [proc for proc in procs if proc.poll() is None]
    for proc in alive:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in alive:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The whole group: a child's own children (if any) go with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"{code} ({signal.Signals(-code).name})"
    return str(code)


# Told of each child that exited on its own: its spec, pid and exit code.
ExitHook = Callable[[ChildSpec, int, int], None]


class Supervisor:
    """Keeps named children running until :meth:`stop`.

    A child that dies is started again after a backoff that doubles with each
    quick death (up to ``max_backoff``) and resets once a child has stayed up
    for ``stable_after`` seconds, so a crash loop does not spin the CPU and a
    rare crash is repaired at once. ``on_exit`` hears of each death first
    (``curvelab up`` records a worker's signal for the lease sweeper); a
    failing hook is reported and never stops the supervision.
    """

    def __init__(
        self,
        *,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        stable_after: float = 60.0,
        stop_timeout: float = 10.0,
        log: Callable[[str], None] = say,
        on_exit: ExitHook | None = None,
    ) -> None:
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.log = log
        self.on_exit = on_exit
        self._children: dict[str, _Child] = {}

    def start(self, spec: ChildSpec) -> None:
        if spec.name in self._children:
            raise ValueError(f"a child named {spec.name!r} is already supervised")
        child = _Child(spec)
        self._children[spec.name] = child
        self._launch(child)

    def _launch(self, child: _Child) -> None:
        child.proc = spawn(child.spec)
        child.started_at = time.monotonic()
        child.restart_at = None
        child.starts += 1

    def pid(self, name: str) -> int | None:
        proc = self._children[name].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def starts(self, name: str) -> int:
        """How many times ``name`` was started, the first time included."""
        return self._children[name].starts

    def poll(self) -> None:
        """Notice dead children and restart those whose backoff has passed.

        Never sleeps: the caller's loop sets the pace.
        """
        now = time.monotonic()
        for child in self._children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._launch(child)
                continue
            code = child.proc.poll() if child.proc is not None else None
            if code is None:
                continue
            if self.on_exit is not None and child.proc is not None:
                try:
                    self.on_exit(child.spec, child.proc.pid, code)
                except Exception as exc:  # a record is a nicety; restarting is the job
                    self.log(f"could not record how {child.spec.name} exited: {exc}")
            if now - child.started_at >= self.stable_after:
                child.quick_failures = 0
            delay = min(self.max_backoff, self.min_backoff * 2**child.quick_failures)
            child.quick_failures += 1
            child.restart_at = now + delay
            self.log(
                f"{child.spec.name} exited with code {describe_exit(code)}; "
                f"restarting in {delay:g}s"
            )

    def stop(self) -> None:
        """Stop every child: all are told at once, then waited for, then killed."""
        procs = [c.proc for c in self._children.values() if c.proc is not None]
        for child in self._children.values():
            child.restart_at = None
        stop_processes(procs, self.stop_timeout)
        self._children.clear()
