"""Caps request bodies while they stream in.

Starlette spools uploads to disk but has no size cap, and FastAPI parses the
whole body before a route runs (fastapi#362); Content-Length alone misses
chunked bodies. So this ASGI middleware counts bytes as they arrive and answers
413 as soon as the cap is passed, without reading the rest.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.asgi_reply import send_detail


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return

        state: dict[str, Any] = {"received": 0, "too_large": False, "replied": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["too_large"] = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns a failure while parsing the body into its own 400;
            # once the cap is passed, the answer is our 413 instead.
            if state["too_large"]:
                if not state["replied"]:
                    state["replied"] = True
                    await self._reject(send)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not state["replied"]:
                state["replied"] = True
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        mib = self.max_bytes / (1024 * 1024)
        detail = f"upload is larger than the {mib:g} MiB limit (CURVELAB_MAX_UPLOAD_MB)"
        await send_detail(send, 413, detail, ((b"connection", b"close"),))
