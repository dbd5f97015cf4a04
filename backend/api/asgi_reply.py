"""A JSON error answered straight from ASGI middleware, before any route runs
(the body cap, the token gate): the same ``{"detail": ...}`` shape as routes."""

from __future__ import annotations

import json

from starlette.types import Send


async def send_detail(
    send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
