"""Refuses a request without the API token before its body is read.

FastAPI parses a request's body before it runs the route's dependencies, so
a check in a dependency alone would let a stranger make the server spool a
whole upload (up to CURVELAB_MAX_UPLOAD_MB) to disk before the 401. This ASGI
middleware answers first. Open without a token: ``/api/health`` (for probes)
and the API's documentation (``/docs``, ``/redoc``, ``/openapi.json``), which
hold no data. Anything else, an unknown path included, needs the token.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.api.deps import TOKEN_REFUSED, token_matches

OPEN_PATHS = frozenset({"/api/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class TokenGate:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if token_matches(authorization, self.token):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": TOKEN_REFUSED}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
