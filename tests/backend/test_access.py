"""Who may use the API: the bearer token on every /api route but health (and
refused before an upload is read), no CORS unless configured, the UI and the
CLI sending the token over real HTTP, Celery taking JSON only, and no file
path built from a string a user chose."""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from kombu.exceptions import ContentDisallowed
from kombu.serialization import dumps, loads, prepare_accept_content
from pydantic import ValidationError

from backend import artifacts
from backend.api import deps
from backend.datasets import layout
from backend.queue import make_celery
from backend.settings import Settings
from tests.backend import hostile_corpus
from tests.conftest import free_port, wait_for

TOKEN = "a-test-token-7f3c9e"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
OPEN = {"/api/health", "/docs", "/redoc", "/openapi.json"}
ROOT = Path(__file__).resolve().parents[2]


def build(settings: Settings, **update: object) -> TestClient:
    from backend.api.main import create_app

    return TestClient(create_app(settings.model_copy(update=update)))


@pytest.fixture
def locked(settings: Settings) -> Iterator[TestClient]:
    with build(settings, api_token=TOKEN) as client:
        yield client


def operations(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI schema, ids filled with a plausible one."""
    paths = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), re.sub(r"\{\w+_id\}", "f" * 32, path))
        for path, methods in paths.items()
        for method in methods
    ]


# -- the token ----------------------------------------------------------------


WRONG = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": TOKEN},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer  {TOKEN}"},
    {"Authorization": "Bearer "},
]


def test_every_api_route_but_health_needs_the_token(locked: TestClient) -> None:
    routes = operations(locked)
    assert ("GET", f"/api/runs/{'f' * 32}/events") in routes
    assert ("GET", f"/api/runs/{'f' * 32}/model") in routes
    for method, path in routes:
        if path in OPEN:
            continue
        for headers in WRONG:
            reply = locked.request(method, path, headers=headers)
            assert reply.status_code == 401, (method, path, headers)
            assert reply.headers["www-authenticate"] == "Bearer"
            assert reply.json()["detail"] == deps.TOKEN_REFUSED
        with_token = locked.request(method, path, headers=BEARER)
        assert with_token.status_code not in (401, 500), (method, path, with_token.text)


def test_health_and_the_docs_stay_open(locked: TestClient) -> None:
    for path in sorted(OPEN):
        reply = locked.get(path)
        assert reply.status_code == 200, path
    assert locked.get("/api/health/", follow_redirects=True).status_code == 200


def test_unknown_paths_and_odd_ids_need_the_token_first(locked: TestClient) -> None:
    # A stranger learns nothing, not even which paths or ids exist.
    for path in ("/api/nope", "/api/runs/not-an-id", "/api/datasets/%00", "/api//datasets", "/"):
        assert locked.get(path).status_code == 401, path
    assert locked.get("/api/nope", headers=BEARER).status_code == 404
    assert locked.get("/api/runs/not-an-id", headers=BEARER).status_code == 404


def test_the_scheme_is_case_insensitive(locked: TestClient) -> None:
    reply = locked.get("/api/datasets", headers={"Authorization": f"bearer {TOKEN}"})
    assert reply.status_code == 200


def test_an_upload_without_the_token_is_refused_before_it_is_read(locked: TestClient) -> None:
    sent = {"chunks": 0}

    def body() -> Iterator[bytes]:
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'
        for _ in range(100):
            sent["chunks"] += 1
            yield bytes(64 * 1024)
        yield b"\r\n--x--\r\n"

    reply = locked.post(
        "/api/datasets", content=body(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert reply.status_code == 401
    assert sent["chunks"] <= 1


def test_the_comparison_is_constant_time() -> None:
    assert "hmac.compare_digest" in inspect.getsource(deps.token_matches)
    assert deps.token_matches(f"Bearer {TOKEN}", TOKEN)
    assert not deps.token_matches(f"Bearer {TOKEN}", TOKEN + "x")
    assert not deps.token_matches("Bearer é", TOKEN)  # any text, no exception


def test_a_placeholder_token_is_refused() -> None:
    for placeholder in ("changeme", "secret", " "):
        with pytest.raises(ValidationError, match="placeholder"):
            Settings(api_token=placeholder)


# -- CORS ---------------------------------------------------------------------


PREFLIGHT = {
    "Origin": "https://elsewhere.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


def test_no_cors_headers_unless_configured(api: TestClient) -> None:
    preflight = api.options("/api/datasets", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    reply = api.get("/api/datasets", headers={"Origin": "https://elsewhere.example"})
    assert reply.status_code == 200
    assert not [name for name in reply.headers if name.startswith("access-control-")]


def test_cors_only_for_the_configured_origins(settings: Settings) -> None:
    allowed = "https://ui.example"
    with build(settings, cors_origins=[allowed], api_token=TOKEN) as client:
        preflight = client.options("/api/datasets", headers=PREFLIGHT | {"Origin": allowed})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in preflight.headers

        refused = client.options("/api/datasets", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in refused.headers

        reply = client.get("/api/datasets", headers=BEARER | {"Origin": allowed})
        assert reply.headers["access-control-allow-origin"] == allowed
        # A page there revalidates the metrics it polls.
        assert "if-none-match" in preflight.headers["access-control-allow-headers"].lower()
        assert reply.headers["access-control-expose-headers"].lower() == "etag"
        other = client.get("/api/datasets", headers=BEARER | {"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_cors_origins_come_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURVELAB_CORS_ORIGINS", "https://a.example, http://b.example:8501/ ,")
    assert Settings().cors_origins == ["https://a.example", "http://b.example:8501"]
    monkeypatch.setenv("CURVELAB_CORS_ORIGINS", "a.example")
    with pytest.raises(ValidationError, match="not an origin"):
        Settings()
    monkeypatch.delenv("CURVELAB_CORS_ORIGINS")
    assert Settings().cors_origins == []


# -- the UI and the CLI send the token, over real HTTP --------------------------


@pytest.fixture
def live_api(settings: Settings) -> Iterator[str]:
    """The locked app served by uvicorn on a loopback port, in a thread."""
    import uvicorn

    from backend.api.main import create_app

    port = free_port()
    app = create_app(settings.model_copy(update={"api_token": TOKEN}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


def test_the_ui_client_sends_a_signed_in_token_and_never_its_environments(
    live_api: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from frontend.api_client import ApiClient, ApiError

    monkeypatch.setenv("CURVELAB_API_URL", live_api)
    # The UI process holds no power: the token, even set, is not read from it.
    monkeypatch.setenv("CURVELAB_API_TOKEN", TOKEN)
    stranger = ApiClient.from_env()
    with pytest.raises(ApiError) as refused:
        stranger.list_datasets()
    assert refused.value.status == 401
    assert stranger.health()["status"] == "ok"  # health stays open

    client = stranger.signed_in(TOKEN)  # what a session gets once signed in
    archive = hostile_corpus.write_zip(tmp_path / "d.zip", hostile_corpus.two_classes(3))
    dataset = client.upload_dataset("d.zip", archive, name="via the UI client")
    assert [d["id"] for d in client.list_datasets()] == [dataset["id"]]
    stranger.close()


def test_the_cli_sends_the_token(
    live_api: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.cli.main import main

    argv = ["demo", "--api-url", live_api, "--classes", "2", "--per-class", "5"]
    monkeypatch.setenv("CURVELAB_API_TOKEN", TOKEN)
    assert main(argv) == 0, capsys.readouterr().err
    assert "started run" in capsys.readouterr().out

    monkeypatch.delenv("CURVELAB_API_TOKEN")
    assert main(argv) == 1
    assert "401" in capsys.readouterr().err
    runs = httpx.get(f"{live_api}/api/runs", headers=BEARER).json()["items"]
    assert len(runs) == 1


# -- Celery, compose, file paths -----------------------------------------------


def test_celery_accepts_json_only(settings: Settings) -> None:
    from worker.celery_app import app as worker_app

    for app in (make_celery(settings), worker_app):
        assert list(app.conf.accept_content) == ["json"]
        assert app.conf.task_serializer == "json"
        assert app.conf.result_serializer == "json"
        accept = prepare_accept_content(app.conf.accept_content)
        content_type, encoding, body = dumps({"args": ["x"]}, serializer="pickle")
        with pytest.raises(ContentDisallowed):
            loads(body, content_type, encoding, accept=accept)
        content_type, encoding, body = dumps({"args": ["x"]}, serializer="json")
        assert loads(body, content_type, encoding, accept=accept) == {"args": ["x"]}


@pytest.mark.parametrize(
    "helper",
    [lambda i: layout.dataset_dir(Path("/d"), i), lambda i: artifacts.run_dir(Path("/r"), i)],
)
@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", "a\x00", "x y", "/etc"])
def test_path_helpers_refuse_what_is_not_an_id(helper, bad: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        helper(bad)


def test_the_dataset_folder_refuses_non_ascii_ids() -> None:
    for bad in ("é", "٣", "ｆｆ"):
        with pytest.raises(ValueError, match="not a dataset id"):
            layout.dataset_dir(Path("/d"), bad)
    assert layout.dataset_dir(Path("/d"), "f" * 32) == Path("/d") / ("f" * 32)


def test_paths_under_data_dir_are_built_only_by_the_helpers() -> None:
    """grep: nothing joins a name onto the datasets or runs folder by hand."""
    joins = re.compile(r"(datasets_dir|runs_dir)\s*/")
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("backend", "worker")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "settings.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if joins.search(line)
    ]
    assert found == []


def test_path_ids_are_checked_before_any_route() -> None:
    from backend.api import main

    source = inspect.getsource(main.create_app)
    assert "Depends(verify_token), Depends(verify_path_ids)" in source
    assert deps.is_server_id("0123456789abcdef" * 2)
    for bad in ("", "ABC", "g", "f" * 65, "f\x00", "ff ", "%00"):
        assert not deps.is_server_id(bad)
