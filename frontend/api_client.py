"""A small client of curvelab's REST API: the only way the UI reaches data.

Plain httpx, so pages stay thin and tests can drive it with
``httpx.MockTransport``. The API's address comes from ``CURVELAB_API_URL``;
the frontend does not import backend's Settings, by design.

The UI process holds no credential of its own: the process-wide client
(``shared_client``) sends none, and a person who signs in gets a client of
their own session (``ApiClient.signed_in``, kept in ``st.session_state``) that
sends their token. ``get_client`` answers the calling session's client.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
import streamlit as st

DEFAULT_API_URL = "http://127.0.0.1:8000"
# Ingest validates every image of an upload before it answers.
UPLOAD_TIMEOUT_S = 600.0
# Longer than the API's own wait for a predict worker (CURVELAB_PREDICT_TIMEOUT_S),
# so that its 504, which says what to do, is what the user reads.
PREDICT_TIMEOUT_S = 120.0
# Runs whose last metrics a client keeps, to reuse when the API answers 304.
KEPT_METRICS = 16
# Where a signed-in session keeps its own client (see frontend/auth.py).
SESSION_CLIENT = "auth.client"


class ApiError(Exception):
    """The API answered with an error (``status``) or not at all (``status`` None).

    ``errors`` carries a 422's structured list (each with ``loc`` and ``msg``)
    so a form can show each message next to the field it names."""

    def __init__(
        self,
        status: int | None,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status}: {detail}" if status is not None else detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        # The decoded error body, for answers that say more than a detail
        # (a 409 on deleting a dataset lists its runs).
        self.body = body

    @property
    def runs(self) -> list[dict[str, Any]]:
        """The runs a conflict lists (``{"id", "name", "status"}``); else empty."""
        found = self.body.get("runs") if isinstance(self.body, dict) else None
        return [r for r in found or [] if isinstance(r, dict)]

    def field_errors(self) -> dict[str, str]:
        """``{"config.batch_size": "Input should be ..."}`` from a 422."""
        found: dict[str, str] = {}
        for item in self.errors:
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            message = str(item.get("msg", "")).removeprefix("Value error, ")
            found[loc] = message
        return found


class ApiUnreachable(ApiError):
    """Nothing answered at the API's URL: the UI shows a banner, not a traceback."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(None, f"cannot reach the API at {base_url}: {reason}")
        self.base_url = base_url


class ApiClient:
    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # The connection pool: clients of several sessions share it, each with
        # its own httpx.Client whose default headers carry its own credential
        # (so every call of a client sends it, whichever method makes it).
        self._transport = transport or httpx.HTTPTransport()
        # Connecting should fail fast so a dead API shows its banner at once.
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 3.0))
        self._owns_pool = True
        # Called when the API answers 401 (the credential stopped working).
        self._on_refused: Callable[[], None] | None = None
        self._metrics = _KeptBodies(KEPT_METRICS)
        self._http, self._fingerprint = self._connect(token)

    def _connect(self, token: str | None) -> tuple[httpx.Client, str]:
        """A client over the pool that sends ``token``, and the token's hash."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=self._timeout,
            transport=self._transport,
        )
        return http, hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""

    @classmethod
    def from_env(cls, **kwargs: Any) -> ApiClient:
        """Reads CURVELAB_API_URL (empty means unset). Never a token: the UI
        process has none; CURVELAB_API_TOKEN is ignored here even when set."""
        url = os.environ.get("CURVELAB_API_URL") or DEFAULT_API_URL
        return cls(url, **kwargs)

    def signed_in(self, token: str, on_refused: Callable[[], None] | None = None) -> ApiClient:
        """A client of the same API and connection pool that sends ``token``:
        one per signed-in session, while this one stays without a credential.

        ``on_refused`` runs when the API answers 401 to it (e.g. to send the
        session back to sign-in), before the :class:`ApiError` is raised."""
        other = copy.copy(self)
        other._owns_pool = False
        other._http, other._fingerprint = other._connect(token)
        other._on_refused = on_refused
        other._metrics = _KeptBodies(KEPT_METRICS)
        return other

    @property
    def has_token(self) -> bool:
        return "authorization" in self._http.headers

    @property
    def cache_key(self) -> str:
        """What a cached read is keyed by: the API and whose credential read it
        (a hash, never the token), so no session is served another's reads."""
        return f"{self.base_url}#{self._fingerprint}" if self._fingerprint else self.base_url

    def close(self) -> None:
        # Closing an httpx.Client closes its transport: a session's client,
        # which borrows the pool, leaves it open.
        if self._owns_pool:
            self._http.close()

    def request(
        self, method: str, path: str, *, accept: tuple[int, ...] = (), **kwargs: Any
    ) -> Any:
        """One call; the decoded JSON body, or :class:`ApiError`.

        ``accept``: error statuses whose body is an answer, not an error."""
        response = self._send(method, path, accept=accept, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return _json(response)

    def _send(
        self, method: str, path: str, *, accept: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, str(exc) or exc.__class__.__name__) from exc
        if response.status_code >= 400 and response.status_code not in accept:
            self._refused(response)
            raise ApiError(
                response.status_code, _detail(response), _errors(response), _body(response)
            )
        return response

    def _refused(self, response: httpx.Response) -> None:
        if response.status_code == 401 and self._on_refused is not None:
            self._on_refused()

    def health(self) -> dict[str, Any]:
        """A degraded API answers 503 with the same body, which says what is down."""
        return dict(self.request("GET", "/api/health", accept=(503,)))

    def list_datasets(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/datasets"))

    def list_runs(self, **filters: Any) -> dict[str, Any]:
        """One page of runs: ``{"items", "total", "next"}``. ``filters`` are the
        API's query parameters (limit, offset, cursor, sort, status, tag, q, ...);
        a list value repeats the parameter, None leaves it out."""
        params = {k: v for k, v in filters.items() if v is not None and v != []}
        return dict(self.request("GET", "/api/runs", params=params))

    def patch_run(self, run_id: str, **changes: Any) -> dict[str, Any]:
        """Rename, retag (the whole list) or annotate a run: ``name``, ``tags``, ``notes``."""
        return dict(self.request("PATCH", f"/api/runs/{_id(run_id)}", json=changes))

    def delete_run(self, run_id: str) -> None:
        """Its rows, stream and files; a queued or running run is cancelled first."""
        self.request("DELETE", f"/api/runs/{_id(run_id)}")

    def delete_runs(self, ids: list[str]) -> dict[str, Any]:
        """``{"deleted": [...], "missing": [...]}``."""
        return dict(self.request("POST", "/api/runs/delete", json={"ids": ids}))

    def get_run(self, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/runs/{_id(run_id)}"))

    def list_presets(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/presets"))

    # datasets
    def upload_dataset(
        self, filename: str, content: bytes | BinaryIO, name: str | None = None
    ) -> dict[str, Any]:
        """POST a ZIP; ingest checks every image, so this may take a while."""
        data = {"name": name} if name else None
        files = {"file": (filename, content, "application/zip")}
        return dict(
            self.request("POST", "/api/datasets", files=files, data=data, timeout=UPLOAD_TIMEOUT_S)
        )

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/datasets/{_id(dataset_id)}"))

    def delete_dataset(self, dataset_id: str, delete_runs: bool = False) -> None:
        """A dataset that has runs is kept (409, the error's ``runs`` lists
        them) unless ``delete_runs``, which deletes them with it."""
        params = {"delete_runs": "true"} if delete_runs else None
        self.request("DELETE", f"/api/datasets/{_id(dataset_id)}", params=params)

    def dataset_samples(self, dataset_id: str, per_class: int = 4) -> list[dict[str, Any]]:
        return list(
            self.request(
                "GET", f"/api/datasets/{_id(dataset_id)}/samples", params={"per_class": per_class}
            )
        )

    # runs
    def create_run(
        self, dataset_id: str, config: dict[str, Any], name: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"dataset_id": dataset_id, "config": config}
        if name:
            body["name"] = name
        return dict(self.request("POST", "/api/runs", json=body))

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/api/runs/{_id(run_id)}/cancel"))

    def run_metrics(self, run_id: str, max_points: int | None = None) -> dict[str, Any]:
        """A live page polls this: the API answers 304 while nothing changed,
        and the body kept from last time is read again. ``max_points`` bounds
        the batch points (the API's default when None)."""
        key = f"{run_id}@{max_points}"  # another bound is another body
        kept = self._metrics.get(key)
        headers = {"If-None-Match": kept[0]} if kept else {}
        params = {"max_points": max_points} if max_points else None
        response = self._send(
            "GET", f"/api/runs/{_id(run_id)}/metrics", headers=headers, params=params
        )
        if response.status_code == 304 and kept:
            self._metrics.put(key, *kept)
            return dict(json.loads(kept[1]))  # new dicts each time: callers may change them
        body = dict(_json(response))
        etag = response.headers.get("etag")
        if etag:
            self._metrics.put(key, etag, response.content)
        return body

    def try_suggestions(self, run_id: str) -> dict[str, Any]:
        """A sweep of the run's config and each suggested patch (and their
        combination): the new sweep (SweepPublic)."""
        return dict(self.request("POST", f"/api/runs/{_id(run_id)}/try-suggestions"))

    # sweeps
    def create_sweep(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` as the API's SweepCreate: dataset_id, config, space, method, ..."""
        return dict(self.request("POST", "/api/sweeps", json=body))

    def list_sweeps(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/sweeps"))

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """The sweep with its runs, best first."""
        return dict(self.request("GET", f"/api/sweeps/{_id(sweep_id)}"))

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/api/sweeps/{_id(sweep_id)}/cancel"))

    def run_diagnosis(self, run_id: str) -> dict[str, Any]:
        """Findings (most severe first) and the per-epoch gap decomposition."""
        return dict(self.request("GET", f"/api/runs/{_id(run_id)}/diagnosis"))

    def run_model(self, run_id: str, weights: str | None = None) -> bytes:
        """A trained .keras file's bytes: ``weights`` "best" or "final"; by
        default the one the run's evaluation uses."""
        params = {"weights": weights} if weights else None
        return self._bytes(f"/api/runs/{_id(run_id)}/model", params, UPLOAD_TIMEOUT_S)

    def has_model(self, run_id: str) -> bool:
        """Whether the run has a model file to download: an external run only if
        its script uploaded one. Reads the answer's status, not the file."""
        try:
            with self._http.stream("GET", f"/api/runs/{_id(run_id)}/model") as response:
                if response.status_code == 401:
                    self._refused(response)
                return response.status_code == 200
        except httpx.TransportError:
            return False

    # what the model learned
    def run_evaluation(self, run_id: str, weights: str | None = None) -> dict[str, Any]:
        """Per-class scores, confusion matrix and mistakes of the best or final weights."""
        params = {"weights": weights} if weights else None
        return dict(self.request("GET", f"/api/runs/{_id(run_id)}/evaluation", params=params))

    def mistake_image(
        self, run_id: str, n: int, weights: str | None = None, size: int = 128
    ) -> bytes:
        """The n-th most confident mistake's image, a PNG thumbnail."""
        params: dict[str, Any] = {"size": size}
        if weights:
            params["weights"] = weights
        path = f"/api/runs/{_id(run_id)}/evaluation/mistakes/{int(n)}/image"
        return self._bytes(path, params)

    def predict(
        self,
        run_id: str,
        filename: str,
        content: bytes | BinaryIO,
        *,
        top_k: int = 5,
        weights: str | None = None,
    ) -> dict[str, Any]:
        """The run's top-k classes for one image; a predict worker answers."""
        params: dict[str, Any] = {"top_k": top_k}
        if weights:
            params["weights"] = weights
        return dict(
            self.request(
                "POST",
                f"/api/runs/{_id(run_id)}/predict",
                files={"file": (filename, content)},
                params=params,
                timeout=PREDICT_TIMEOUT_S,
            )
        )

    def _bytes(
        self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> bytes:
        """A binary answer (a model, an image) as it came."""
        try:
            response = self._http.get(
                path, params=params, timeout=timeout if timeout else httpx.USE_CLIENT_DEFAULT
            )
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, str(exc) or exc.__class__.__name__) from exc
        if response.status_code >= 400:
            self._refused(response)
            raise ApiError(response.status_code, _detail(response))
        return response.content

    def run_batches_csv(self, run_id: str) -> bytes:
        """Every batch point of the run as CSV (``run_metrics`` may be downsampled)."""
        return self._bytes(f"/api/runs/{_id(run_id)}/metrics/batches.csv", None, UPLOAD_TIMEOUT_S)


class _KeptBodies:
    """The last ETag and body of the ``size`` runs read most recently; thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._bodies: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[str, bytes] | None:
        with self._lock:
            return self._bodies.get(key)

    def put(self, key: str, etag: str, body: bytes) -> None:
        with self._lock:
            self._bodies[key] = (etag, body)
            self._bodies.move_to_end(key)
            while len(self._bodies) > self.size:
                self._bodies.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._bodies)


def _id(value: str) -> str:
    return quote(value, safe="")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ApiError(response.status_code, "the answer is not JSON") from exc


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _errors(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors is None and isinstance(body, dict) and isinstance(body.get("detail"), list):
        errors = body["detail"]
    return [e for e in errors or [] if isinstance(e, dict)]


def _detail(response: httpx.Response) -> str:
    """The ``detail`` of an error body, flattened when it is FastAPI's 422 list."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        return "; ".join(_one_error(item) for item in detail)
    if detail is None:
        return response.reason_phrase
    return str(detail)


def _one_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = ".".join(str(part) for part in item.get("loc", []) if part != "body")
    return f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", ""))


@st.cache_resource
def shared_client() -> ApiClient:
    """One client per UI process, without a credential: its connection pool
    serves every session, and it is all a session that has not signed in has."""
    return ApiClient.from_env()


def get_client() -> ApiClient:
    """The calling session's client: its own, with its credential, once signed
    in (frontend/auth.py); otherwise the shared one, which holds none."""
    own = st.session_state.get(SESSION_CLIENT)
    return own if isinstance(own, ApiClient) else shared_client()
