"""How spooled records become requests to the external-run routes, and what
the server's reply means for them. The transport (in the background of a fit)
and ``curvelab sync`` (in the foreground) both send through here.

Routes (the bodies are backend/fit_summary.py's):
POST /api/runs/external, POST /api/runs/{id}/epochs, POST /api/runs/{id}/batches,
PUT /api/runs/{id}/model (multipart ``file``), POST /api/runs/{id}/finish.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from curvelab.spool import Record, Spool

# Consecutive epochs or batch points go in one request, up to these counts
# (the server's own caps are higher; its JSON body cap is 1 MiB by default).
MERGE_LIMIT = {"epochs": 200, "batches": 2000}
# Short: a slow server must not hold the queue (the record is retried).
TIMEOUT = httpx.Timeout(5.0, connect=3.0)
MODEL_TIMEOUT = httpx.Timeout(120.0, connect=3.0)


class Outcome(enum.Enum):
    SENT = "sent"  # the server has it
    DROPPED = "dropped"  # refused for good (a 4xx): never sent again
    RETRY = "retry"  # unreachable, timed out, 408/429/5xx: try again later
    DENIED = "denied"  # 401/403: no use sending anything more with this token


@dataclass(frozen=True)
class Reply:
    outcome: Outcome
    detail: str = ""


def next_request(pending: Sequence[Record]) -> list[Record]:
    """The records of the next request: the first pending one, with the
    epochs or batch points that follow it merged in."""
    if not pending:
        return []
    first = pending[0]
    limit = MERGE_LIMIT.get(first.op)
    if limit is None:
        return [first]
    group = [first]
    count = _count(first)
    for record in pending[1:]:
        if record.op != first.op or count + _count(record) > limit:
            break
        group.append(record)
        count += _count(record)
    return group


def _count(record: Record) -> int:
    body = record.body or {}
    return len(body.get(record.op, ())) or 1


def send(
    client: httpx.Client, spool: Spool, records: Sequence[Record], headers: dict[str, str]
) -> Reply:
    """Send one request for ``records`` (as ``next_request`` grouped them)."""
    first = records[0]
    base = f"{spool.api_url}/api/runs"
    try:
        if first.op == "create":
            response = client.post(f"{base}/external", json=first.body, headers=headers)
        elif first.op in ("epochs", "batches"):
            items: list[Any] = []
            for record in records:
                items.extend((record.body or {}).get(first.op, []))
            response = client.post(
                f"{base}/{spool.run_id}/{first.op}", json={first.op: items}, headers=headers
            )
        elif first.op == "finish":
            response = client.post(
                f"{base}/{spool.run_id}/finish", json=first.body, headers=headers
            )
        elif first.op == "model":
            path = spool.file_path(first)
            if path is None or not path.is_file():
                return Reply(Outcome.DROPPED, f"the model file {path} is gone")
            with path.open("rb") as handle:
                response = client.put(
                    f"{base}/{spool.run_id}/model",
                    files={"file": (path.name, handle, "application/octet-stream")},
                    headers=headers,
                    timeout=MODEL_TIMEOUT,
                )
        else:
            return Reply(Outcome.DROPPED, f"unknown record {first.op!r}")
    except httpx.HTTPError as exc:
        return Reply(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
    return judge(first.op, response)


def deliver(
    client: httpx.Client, spool: Spool, group: Sequence[Record], headers: dict[str, str]
) -> list[tuple[list[Record], Reply]]:
    """Send a group as one request; when the server refuses a merged one,
    its records one by one, so that one bad record drops only itself. Stops
    at the first reply that is not final (RETRY, DENIED)."""
    reply = send(client, spool, group, headers)
    if reply.outcome is not Outcome.DROPPED or len(group) == 1:
        return [(list(group), reply)]
    results: list[tuple[list[Record], Reply]] = []
    for record in group:
        one = send(client, spool, [record], headers)
        results.append(([record], one))
        if one.outcome in (Outcome.RETRY, Outcome.DENIED):
            break
    return results


def judge(op: str, response: httpx.Response) -> Reply:
    status = response.status_code
    if status < 300:
        return Reply(Outcome.SENT)
    detail = f"HTTP {status} for {op}: {_detail(response)}"
    if status in (401, 403):
        return Reply(Outcome.DENIED, detail)
    if status in (408, 429) or status >= 500:
        return Reply(Outcome.RETRY, detail)
    # 409: the server has the run already (a re-sent create) or will never take
    # this record (a worker's run, a finished one): sending it again cannot help.
    # Any other 4xx: this record is refused for good; it is not retried forever.
    return Reply(Outcome.DROPPED, detail)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]
