"""An in-process HTTP server standing in for curvelab's API in the client's
tests (http.server on a thread): it records every request and answers from a
script of statuses before answering as the API does (201 create, 200 else)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    status: int

    @property
    def op(self) -> str:
        return "create" if self.path.endswith("/external") else self.path.rsplit("/", 1)[-1]


@dataclass
class StubApi:
    fail: list[int] = field(default_factory=list)  # statuses to answer first, in order
    requests: list[Request] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def accepted(self, op: str | None = None) -> list[Request]:
        """The requests answered 2xx (of one route: create, epochs, batches, model, finish)."""
        with self.lock:
            return [r for r in self.requests if r.status < 300 and op in (None, r.op)]

    def epochs(self) -> list[int]:
        return [item["epoch"] for r in self.accepted("epochs") for item in r.body["epochs"]]

    def steps(self) -> list[int]:
        return [item["step"] for r in self.accepted("batches") for item in r.body["batches"]]


def _handler(stub: StubApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw  # a multipart upload
            with stub.lock:
                request = Request(self.command, self.path, body, dict(self.headers), 0)
                request.status = stub.fail.pop(0) if stub.fail else 200
                if request.status == 200 and request.op == "create":
                    request.status = 201
                stub.requests.append(request)
            reply = json.dumps({"detail": "scripted"} if request.status >= 300 else {}).encode()
            self.send_response(request.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_POST = do_PUT = _answer

    return Handler


def serve(stub: StubApi) -> Iterator[StubApi]:
    stub.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    thread = threading.Thread(target=stub.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.server.shutdown()
        stub.server.server_close()
