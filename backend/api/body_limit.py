"""Caps request bodies while they stream in, each route with its own cap.

Starlette spools uploads to disk but has no size cap, and FastAPI parses the
whole body before a route runs (fastapi#362); Content-Length alone misses
chunked bodies. So this ASGI middleware counts bytes as they arrive and answers
413 as soon as the route's cap is passed, without reading the rest. Every JSON
route shares a small cap; the upload routes name theirs (``BodyCap``).

Why not FastAPI's own ``max_body_size`` (0.165, app, router and route)? It
streams too, but a body declared too large (Content-Length) is answered with
Starlette's plain text "Content Too Large", whatever handler is installed
(``RequestBodyLimitResponder.send_with_limit`` replaces the response), so no
reply could name the limit and the setting that moves it, as every refusal
here does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.asgi_reply import send_detail


@dataclass(frozen=True)
class BodyCap:
    """A cap, and how its refusal reads: ``{what} is larger than the
    {limit} limit ({setting})``. ``slack``: bytes a multipart body carries
    besides the file (part headers, boundaries), allowed over the limit."""

    limit: int
    what: str
    setting: str
    slack: int = 0

    @property
    def max_bytes(self) -> int:
        return self.limit + self.slack

    @property
    def detail(self) -> str:
        return f"{self.what} is larger than the {_size(self.limit)} limit ({self.setting})"


@dataclass(frozen=True)
class RouteCap:
    method: str
    path: str  # a route's path, as the router writes it: "/api/runs/{run_id}/predict"
    cap: BodyCap


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, default: BodyCap, routes: Sequence[RouteCap] = ()) -> None:
        self.app = app
        self.default = default
        self.routes: list[tuple[str, re.Pattern[str], BodyCap]] = [
            (route.method.upper(), compile_path(route.path)[0], route.cap) for route in routes
        ]

    def cap_for(self, scope: Scope) -> BodyCap:
        for method, pattern, cap in self.routes:
            if scope["method"] == method and pattern.match(scope["path"]):
                return cap
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap.max_bytes:
            await _reject(send, cap)
            return

        state: dict[str, Any] = {"received": 0, "too_large": False, "replied": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > cap.max_bytes:
                    state["too_large"] = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns a failure while parsing the body into its own 400;
            # once the cap is passed, the answer is our 413 instead.
            if state["too_large"]:
                if not state["replied"]:
                    state["replied"] = True
                    await _reject(send, cap)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not state["replied"]:
                state["replied"] = True
                await _reject(send, cap)


async def _reject(send: Send, cap: BodyCap) -> None:
    await send_detail(send, 413, cap.detail, ((b"connection", b"close"),))


def _size(count: int) -> str:
    for unit, name in ((1024 * 1024, "MiB"), (1024, "KiB")):
        if count >= unit and count % unit == 0:
            return f"{count // unit} {name}"
    return f"{count} bytes"
