"""docker-compose.yml is consistent with the code: no Docker engine runs here,
so the file is parsed and checked against Settings and the repository."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: None if value is None else str(value) for key, value in env.items()}


def interpolate(value: str) -> str:
    """Compose's ${VAR:?msg} and ${VAR:-default}, with required variables set to 'x'."""
    value = re.sub(r"\$\{\w+:\?[^}]*\}", "x", value)
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_the_six_services_and_a_shared_data_volume() -> None:
    assert set(SERVICES) == {"redis", "postgres", "backend", "worker", "predictor", "frontend"}
    assert "data" in COMPOSE["volumes"]
    for name in ("backend", "worker", "predictor"):
        assert "data:/data" in SERVICES[name]["volumes"], name
        assert environment(SERVICES[name])["CURVELAB_DATA_DIR"] == "/data"


@pytest.mark.parametrize("name", ["redis", "postgres"])
def test_stores_are_not_published_and_have_healthchecks(name: str) -> None:
    service = SERVICES[name]
    assert "ports" not in service
    assert "healthcheck" in service


def test_redis_appends_and_postgres_password_is_required() -> None:
    assert "--appendonly" in SERVICES["redis"]["command"]
    assert (
        SERVICES["redis"]["command"][SERVICES["redis"]["command"].index("--appendonly") + 1]
        == "yes"
    )
    password = environment(SERVICES["postgres"])["POSTGRES_PASSWORD"]
    assert password == "${POSTGRES_PASSWORD:?Variable not set}"


def test_depends_on_waits_for_health() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for other, rule in depends.items():
            assert rule == {"condition": "service_healthy"}, f"{name} -> {other}"
            assert "healthcheck" in SERVICES[other], f"{name} waits on {other}, which has none"


def test_every_curvelab_variable_is_a_setting() -> None:
    named = set(re.findall(r"\bCURVELAB_([A-Z0-9_]+)", COMPOSE_TEXT))
    assert named, "compose names no CURVELAB_* variable"
    unknown = {f"CURVELAB_{n}" for n in named if n.lower() not in Settings.model_fields}
    assert not unknown, f"not fields of Settings: {sorted(unknown)}"


@pytest.mark.parametrize("name", ["backend", "worker", "predictor", "frontend"])
def test_each_service_environment_makes_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Settings refuses an empty or placeholder secret: what compose passes must load.
    for key in [key for key in os.environ if key.startswith("CURVELAB_")]:
        monkeypatch.delenv(key)
    for key, value in environment(SERVICES[name]).items():
        if key.startswith("CURVELAB_") and value is not None:  # None: passed through if set
            monkeypatch.setenv(key, interpolate(value))
    Settings()


def test_database_is_postgres_through_psycopg() -> None:
    url = environment(SERVICES["backend"])["CURVELAB_DATABASE_URL"] or ""
    assert url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in url
    assert environment(SERVICES["frontend"])["CURVELAB_API_URL"] == "http://backend:8000"


def test_worker_reserves_a_gpu_and_restarts() -> None:
    worker = SERVICES["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert environment(worker)["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    for name in ("backend", "worker", "predictor", "frontend"):
        assert SERVICES[name]["restart"] == "unless-stopped", name


def test_the_predictor_runs_the_cli_predict_worker_on_the_worker_image() -> None:
    from backend.cli.main import build_parser

    predictor = SERVICES["predictor"]
    assert predictor["build"] == SERVICES["worker"]["build"]
    command = predictor["command"]
    assert command[0] == "curvelab"
    assert build_parser().parse_args(command[1:]).command == "predict-worker"
    assert "deploy" not in predictor  # no GPU reserved: training keeps it


@pytest.mark.parametrize("name", ["backend", "worker", "frontend"])
def test_dockerfiles_exist_and_run_as_a_user(name: str) -> None:
    build = SERVICES[name]["build"]
    dockerfile = ROOT / build.get("context", ".") / build["dockerfile"]
    assert dockerfile.is_file(), dockerfile
    text = dockerfile.read_text()
    assert re.search(r"^USER \w+", text, re.MULTILINE), f"{dockerfile} runs as root"
    if name == "worker":
        assert text.startswith("#") and "FROM tensorflow/tensorflow:2.21.0-gpu" in text
    else:
        assert "FROM python:3.11-slim" in text
    for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE):
        for source in line.split()[:-1]:  # the last word is the destination
            assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which is missing"


def test_the_ui_gets_no_token_and_no_store_password() -> None:
    """The UI has no power of its own: people sign in with the API's token."""
    frontend = environment(SERVICES["frontend"])
    assert set(frontend) == {"CURVELAB_API_URL", "CURVELAB_MAX_UPLOAD_MB"}
    assert "CURVELAB_API_TOKEN" in environment(SERVICES["backend"])  # the API checks it


def test_the_ui_upload_cap_follows_the_apis() -> None:
    # Both passed through from the same variable: `curvelab ui` turns it into
    # Streamlit's --server.maxUploadSize.
    assert environment(SERVICES["backend"])["CURVELAB_MAX_UPLOAD_MB"] is None
    assert environment(SERVICES["frontend"])["CURVELAB_MAX_UPLOAD_MB"] is None


def test_only_the_api_and_the_ui_are_published_and_the_file_says_what_each_needs() -> None:
    published = {name: service["ports"] for name, service in SERVICES.items() if "ports" in service}
    assert published == {
        "backend": ["${BIND_ADDRESS:-127.0.0.1}:8000:8000"],
        "frontend": ["${BIND_ADDRESS:-127.0.0.1}:8501:8501"],
    }
    header = COMPOSE_TEXT.split("\nx-curvelab-env")[0]
    for said in ("8000", "8501", "sign-in form and nothing else", "CURVELAB_API_TOKEN", "TLS"):
        assert said in header, said
