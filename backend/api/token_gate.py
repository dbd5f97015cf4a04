"""Refuses a request without the API token before its body is read.

FastAPI parses a request's body before it runs the route's dependencies, so
a check in a dependency alone would let a stranger make the server spool a
whole upload (up to CURVELAB_MAX_UPLOAD_MB) to disk before the 401. This ASGI
middleware answers first. Open without a token: ``/api/health`` (for probes)
and the API's documentation (``/docs``, ``/redoc``, ``/openapi.json``), which
hold no data. Anything else, an unknown path included, needs the token.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.api.asgi_reply import send_detail
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
        await send_detail(send, 401, TOKEN_REFUSED, ((b"www-authenticate", b"Bearer"),))
