"""The runs list at 10,000 runs against 10: ``GET /api/runs`` and the Runs page.

Two data dirs (SQLite), each seeded by ``many_runs.seed`` (finished runs of
ten epochs, summaries, tags, two datasets, sweeps): one of 10 runs, the
baseline, and one of 10,000. Each has its own API under uvicorn and its own
UI under streamlit (the private redis-server is shared: nothing here trains),
all four up at once, so the two sizes take turns on the same machine.

- API: ``GET /api/runs?limit=50`` newest first, ``sort=-best_val_loss``,
  ``status=succeeded`` (most runs: the filter that selects least), and
  filtered (status, name search, tag), one request after another on one
  keep-alive connection as the UI's client sends them, in batches of ten
  alternating between the sizes; p50, p95 and the body's size. An API that
  still answers with the list of every run (before issue 13) is measured
  the same way, up to a time budget.
- Browser: the Runs page in headless Debian chromium (Playwright), each load
  in a new tab, from navigation start to the table's first row drawn. The
  grid is a canvas (glide-data-grid); the signal is the first data row of
  its accessible copy holding a seeded run's name — written in the same
  render as the canvas — plus two animation frames for the paint, read as
  ``performance.now()`` in the page. The first load after the UI starts
  (imports, caches cold) is shown apart; the figure is the median of the
  loads after it, taking turns between the sizes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from backend.db import Database
from backend.settings import Settings
from benchmarks import many_runs
from benchmarks.fixtures import Workspace, api_server, ui_server, workspace
from benchmarks.report import Row, at_most, format_table, machine, median, percentile

SMALL, LARGE = 10, 10_000
QUERIES = (
    (" (newest first)", "limit=50"),
    ("&sort=-best_val_loss", "limit=50&sort=-best_val_loss"),
    ("&status=succeeded", "limit=50&status=succeeded"),
    ("&status=succeeded&q=adam&tag=bn", "limit=50&status=succeeded&q=adam&tag=bn"),
)
BATCH = 10  # requests in a row to one size before the other's turn
API_BUDGET_S = 60.0  # per query and size: the old list of every run takes seconds a request
MIN_SAMPLES = 5
LOAD_TIMEOUT_S = 120.0
CHROMIUM = "/usr/bin/chromium"

# Resolves when the first data row of a dataframe names a seeded run (two
# frames later, for the canvas's paint), when the page shows an exception or an error,
# or at the time limit; notes when the script's first element appeared
# (what any page costs: the app's JavaScript, its session, the script's start).
_DRAWN_JS = """
([prefix, limitMs]) => new Promise((resolve) => {
  let firstMs = null;
  const look = () => {
    const error = document.querySelector(
      "[data-testid='stException'], [data-testid='stMain'] [data-testid='stAlertContentError']");
    if (error) return resolve({ error: error.innerText.slice(0, 300) });
    if (firstMs === null &&
        document.querySelector("[data-testid='stMain'] [data-testid='stElementContainer']")) {
      firstMs = performance.now();
    }
    const cells = document.querySelectorAll(
      "[data-testid='stDataFrame'] tr[aria-rowindex='2'] td");
    if ([...cells].some((td) => (td.textContent || "").startsWith(prefix))) {
      return requestAnimationFrame(() => requestAnimationFrame(
        () => resolve({ ms: performance.now(), firstMs })));
    }
    if (performance.now() > limitMs) return resolve({ timeout: true, firstMs });
    requestAnimationFrame(look);
  };
  look();
})
"""


@dataclass(frozen=True)
class _Stack:
    runs: int
    api_url: str
    ui_url: str


def measure(space: Workspace, requests: int, loads: int, large: int = LARGE) -> list[Row]:
    with ExitStack() as stack:
        small_stack = stack.enter_context(_stack(space, SMALL))
        large_stack = stack.enter_context(_stack(space, large))
        rows = _api_rows(small_stack, large_stack, requests)
        try:
            rows += _page_rows(small_stack, large_stack, loads)
        except Exception as exc:  # the API's rows still count
            rows.append(Row(f"Runs page: FAILED ({exc})"[:200], None, None))
    return rows


@contextmanager
def _stack(space: Workspace, runs: int) -> Iterator[_Stack]:
    """A data dir of ``runs`` seeded runs beside ``space``'s, with its API and UI."""
    settings = Settings(data_dir=space.root / f"runs-{runs}", redis_url=space.settings.redis_url)
    settings.ensure_dirs()
    db = Database(settings.sqlalchemy_url)
    try:
        started = time.monotonic()
        many_runs.seed(db, runs)
        print(f"   {runs} runs seeded in {time.monotonic() - started:.1f}s", flush=True)
        sibling = Workspace(root=settings.data_dir, settings=settings, db=db, redis=space.redis)
        with api_server(sibling) as api, ui_server(sibling, api.url) as ui:
            yield _Stack(runs, api.url, ui.url)
    finally:
        db.dispose()


def _api_rows(small: _Stack, large: _Stack, requests: int) -> list[Row]:
    rows: list[Row] = []
    for label, query in QUERIES:
        (small_t, small_size), (large_t, large_size) = _sample(query, (small, large), requests)
        head = f"GET /api/runs?limit=50{label}, {small.runs} → {large.runs:,} runs"
        rows += [
            Row(f"{head}: p50 (ms)", percentile(small_t, 50), percentile(large_t, 50), goal="info"),
            Row(
                f"  p95 (ms), {len(large_t)} requests",
                percentile(small_t, 95),
                percentile(large_t, 95),
                goal="≤ 50 ms",
                check=at_most(50),
                checks="curvelab",
            ),
            Row("  response body (KiB)", small_size / 1024, large_size / 1024, goal="info"),
        ]
    return rows


def _sample(query: str, stacks: tuple[_Stack, ...], requests: int) -> list[tuple[list[float], int]]:
    """Per stack: each request's milliseconds and the body's bytes. Up to
    ``requests`` each, ``BATCH`` at a time in turns; past ``API_BUDGET_S``
    of one stack's requests, only ``MIN_SAMPLES``."""
    times: list[list[float]] = [[] for _ in stacks]
    spent = [0.0 for _ in stacks]
    with ExitStack() as stack:
        clients = [stack.enter_context(httpx.Client(timeout=60)) for _ in stacks]
        sizes = [
            _first_reply(client, f"{one.api_url}/api/runs?{query}")
            for one, client in zip(stacks, clients, strict=True)
        ]

        def wanted(index: int) -> bool:
            done = len(times[index])
            over = spent[index] > API_BUDGET_S and done >= MIN_SAMPLES
            return done < requests and not over

        while any(wanted(index) for index in range(len(stacks))):
            for index, (one, client) in enumerate(zip(stacks, clients, strict=True)):
                for _ in range(BATCH):
                    if not wanted(index):
                        break
                    started = time.perf_counter()
                    client.get(f"{one.api_url}/api/runs?{query}").raise_for_status()
                    elapsed = time.perf_counter() - started
                    spent[index] += elapsed
                    times[index].append(1000 * elapsed)
    return list(zip(times, sizes, strict=True))


def _first_reply(client: httpx.Client, url: str) -> int:
    """Warm the connection; print what the query matched; the body's size."""
    reply = client.get(url)
    reply.raise_for_status()
    body = reply.json()
    if isinstance(body, list):  # before issue 13: every run, query ignored but status
        print(f"   {url}: a list of {len(body)} runs (no paging)", flush=True)
    else:
        print(f"   {url}: {len(body['items'])} of {body['total']}, next {body['next']!r}")
    return len(reply.content)


@dataclass(frozen=True)
class _Load:
    """One page load, seconds from navigation start; None: not within the limit."""

    drawn: float | None  # the table's first row
    first: float | None  # the script's first element


def _page_rows(small: _Stack, large: _Stack, loads: int) -> list[Row]:
    from playwright.sync_api import sync_playwright

    done: dict[int, list[_Load]] = {small.runs: [], large.runs: []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            for _ in range(loads + 1):  # the first: the UI's first page since it started
                for stack in (small, large):
                    mine = done[stack.runs]
                    if not mine or mine[-1].drawn is not None:  # once too slow, always
                        mine.append(_load(browser, stack.ui_url))
        finally:
            browser.close()
    cold_small, *warm_small = done[small.runs]
    cold_large, *warm_large = done[large.runs]
    drawn_large = _median([one.drawn for one in warm_large])
    late = "" if drawn_large is not None else f", not drawn within {LOAD_TIMEOUT_S:.0f} s"
    return [
        Row(
            f"Runs page, {small.runs} → {large.runs:,} runs: navigation → first row drawn, "
            f"median of {loads} (s){late}",
            _median([one.drawn for one in warm_small]),
            drawn_large,
            goal="≤ 1.5×",
            check=at_most(1.5),
        ),
        Row(
            f"  at {large.runs:,} runs (s)",
            None,
            drawn_large,
            goal="≤ 2 s",
            check=at_most(2.0),
            checks="curvelab",
        ),
        Row(
            "  navigation → the script's first element, median (s)",
            _median([one.first for one in warm_small]),
            _median([one.first for one in warm_large]),
            goal="info",
        ),
        Row(
            "  first load after the UI starts (s)", cold_small.drawn, cold_large.drawn, goal="info"
        ),
    ]


def _median(values: list[float | None]) -> float | None:
    """The median; None when any is missing (a load past the limit) or none."""
    known = [v for v in values if v is not None]
    return median(known) if known and len(known) == len(values) else None


def _load(browser: Any, ui_url: str) -> _Load:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(ui_url, wait_until="domcontentloaded")
        found = page.evaluate(_DRAWN_JS, [many_runs.NAME_PREFIX, 1000 * LOAD_TIMEOUT_S])
    finally:
        page.close()
    if "error" in found:
        raise RuntimeError(f"the Runs page shows an error: {found['error']}")
    first = None if found.get("firstMs") is None else float(found["firstMs"]) / 1000
    drawn = None if "timeout" in found else float(found["ms"]) / 1000
    return _Load(drawn, first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=LARGE, help="the large database's runs")
    parser.add_argument("--requests", type=int, default=100, help="per query and size")
    parser.add_argument("--loads", type=int, default=5, help="page loads per size")
    args = parser.parse_args()
    print("machine:", "; ".join(f"{k}: {v}" for k, v in machine().items()), flush=True)
    with workspace() as space:
        rows = measure(space, args.requests, args.loads, args.runs)
    print(format_table(rows))


if __name__ == "__main__":
    main()
