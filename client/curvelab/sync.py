"""Upload what a fit could not send: ``curvelab sync FILE`` and ``curvelab.sync``.

A spool (spool.py) names its server; its unsent records go in order, each
request once (a few quick retries for a flaky link), through the same wire
as the callback's transport. Re-sending is harmless: the server ignores an
epoch or a batch point it has (same run id, epoch number, step).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from curvelab import env, wire
from curvelab.spool import Spool, spool_files

log = logging.getLogger("curvelab")

RETRIES = 3


@dataclass
class SyncResult:
    path: Path
    run_id: str | None = None
    sent: int = 0  # records the server now has
    dropped: list[str] = field(default_factory=list)  # refused for good, with why
    left: int = 0  # still unsent
    error: str | None = None  # why it stopped (unreachable, token refused, in use)

    @property
    def ok(self) -> bool:
        return self.error is None and self.left == 0


def sync(
    path: str | os.PathLike[str],
    *,
    url: str | None = None,
    token: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> SyncResult:
    """Send a spool's unsent records to its server (``url``: another one);
    the spool is deleted once all are sent. Never raises for the network."""
    path = Path(path)
    result = SyncResult(path)
    say = echo or (lambda line: None)
    try:
        spool = Spool.read(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        result.error = str(exc)
        return result
    result.run_id = spool.run_id
    if url:
        spool.api_url = env.api_url(url)
    headers = env.auth_headers(env.api_token(token))
    if not spool.open_for_ack():
        result.error = f"{path} is in use by a running fit (or another sync)"
        result.left = len(spool.pending())
        return result
    try:
        with httpx.Client(timeout=wire.TIMEOUT) as client:
            _send_all(client, spool, headers, result, say)
    finally:
        result.left = len(spool.pending())
        spool.close()
    return result


def _send_all(
    client: httpx.Client,
    spool: Spool,
    headers: dict[str, str],
    result: SyncResult,
    say: Callable[[str], None],
) -> None:
    backoff = 0.5
    failures = 0
    while pending := spool.pending():
        for group, reply in wire.deliver(client, spool, wire.next_request(pending), headers):
            if reply.outcome is wire.Outcome.RETRY and failures < RETRIES:
                failures += 1
                time.sleep(backoff)
                backoff *= 2
                break
            if reply.outcome in (wire.Outcome.RETRY, wire.Outcome.DENIED):
                result.error = f"{spool.api_url}: {reply.detail}"
                return
            failures, backoff = 0, 0.5
            if reply.outcome is wire.Outcome.DROPPED:
                result.dropped.append(reply.detail)
                say(f"  refused {_what(group)}: {reply.detail}")
            else:
                result.sent += len(group)
                say(f"  sent {_what(group)}")
            spool.ack(record.seq for record in group)


def _what(group: list) -> str:
    op = group[0].op
    if op in ("epochs", "batches"):
        items = [item for record in group for item in (record.body or {}).get(op, [])]
        key = "epoch" if op == "epochs" else "step"
        numbers = [item.get(key) for item in items if isinstance(item, dict)]
        if numbers:
            return f"{op} {numbers[0]}–{numbers[-1]}" if len(numbers) > 1 else f"{op} {numbers[0]}"
        return op
    if op == "finish":
        return f"finish ({(group[0].body or {}).get('status')})"
    return op


def sync_all(
    folder: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[SyncResult]:
    """``sync`` for every spool in the spool folder (CURVELAB_SPOOL_DIR)."""
    return [
        sync(path, url=url, token=token, echo=echo) for path in spool_files(env.spool_dir(folder))
    ]
