"""The ``curvelab`` command's parts, over real processes where it matters:
the Redis finder, the supervisor, argument parsing, the demo's REST calls.
The whole ``curvelab up`` is exercised by the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from backend.cli import demo, parts
from backend.cli.main import build_parser, main, resolve
from backend.cli.redis_server import RedisUnavailable, answers, find_or_start
from backend.cli.supervisor import ChildSpec, Supervisor
from backend.cli.up import UpOptions, masked, run_up
from backend.settings import Settings
from backend.train_config import PRESETS
from tests.conftest import free_port, wait_for

# ---- arguments and command lines -------------------------------------------


def test_up_defaults() -> None:
    args = build_parser().parse_args(["up"])
    assert (args.api_port, args.ui_port, args.host, args.no_ui) == (8000, 8501, "127.0.0.1", False)
    assert args.data_dir is None and args.redis_url is None  # filled from Settings


def test_unset_options_come_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", redis_url="redis://127.0.0.1:1/3", api_url="http://api.example:9/"
    )
    up = resolve(build_parser().parse_args(["up", "--no-ui", "--api-port", "9001"]), settings)
    assert up.data_dir == tmp_path / "d" and up.redis_url == "redis://127.0.0.1:1/3"
    assert up.no_ui and up.api_port == 9001
    given = resolve(build_parser().parse_args(["worker", "--data-dir", "rel"]), settings)
    assert given.data_dir == Path("rel").resolve()
    ui = resolve(build_parser().parse_args(["ui"]), settings)
    assert ui.api_url == "http://api.example:9"


def test_demo_defaults() -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.classes, args.per_class, args.api_url) == (6, 60, None)


def test_child_commands() -> None:
    assert parts.worker_argv()[:3] == [sys.executable, "-m", "celery"]
    assert {"--pool=solo", "--concurrency=1", "--queues=training"} <= set(parts.worker_argv())
    api = parts.api_argv("0.0.0.0", 8123)
    assert "backend.api.main:create_app" in api and api[-4:] == [
        "--host",
        "0.0.0.0",
        "--port",
        "8123",
    ]
    ui = parts.ui_argv("127.0.0.1", 8765, max_upload_mb=64)
    app = Path(ui[4])
    assert app.name == "streamlit_app.py" and app.parent.name == "frontend" and app.is_file()
    assert ui[ui.index("--server.port") + 1] == "8765"
    assert ui[ui.index("--server.headless") + 1] == "true"
    # The UI's file picker takes what the API takes (CURVELAB_MAX_UPLOAD_MB).
    assert ui[ui.index("--server.maxUploadSize") + 1] == "64"


def test_finding_the_ui_imports_no_frontend_code() -> None:
    code = (
        "import sys; from backend.cli import parts; "
        "parts.ui_argv('127.0.0.1', 1, max_upload_mb=1); "
        "assert 'frontend' not in sys.modules and 'streamlit' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_http_url_and_child_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert parts.http_url("0.0.0.0", 80) == "http://127.0.0.1:80"
    assert parts.http_url("::1", 81) == "http://[::1]:81"
    monkeypatch.setenv("CURVELAB_MAX_UPLOAD_MB", "5")
    monkeypatch.setenv("CURVELAB_REDIS_URL", "redis://elsewhere:1/0")
    env = parts.child_env(
        data_dir=tmp_path, redis_url="redis://127.0.0.1:2/0", api_url="http://127.0.0.1:3"
    )
    assert env["CURVELAB_MAX_UPLOAD_MB"] == "5"  # the user's settings go through
    assert env["CURVELAB_REDIS_URL"] == "redis://127.0.0.1:2/0"  # ours win
    assert env["CURVELAB_DATA_DIR"] == str(tmp_path)
    assert env["CURVELAB_API_URL"] == "http://127.0.0.1:3"


def test_the_ui_child_gets_no_token_and_no_store_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CURVELAB_API_TOKEN", "the-api-token")
    monkeypatch.setenv("CURVELAB_DATABASE_URL", "postgresql+psycopg://u:pw@db/curvelab")
    monkeypatch.setenv("CURVELAB_MAX_UPLOAD_MB", "64")
    monkeypatch.setenv("STREAMLIT_THEME_BASE", "dark")  # not ours: passes
    base = parts.child_env(
        data_dir=tmp_path, redis_url="redis://:pw@127.0.0.1:2/0", api_url="http://127.0.0.1:3"
    )
    assert base["CURVELAB_API_TOKEN"] == "the-api-token"  # the API and workers need it
    env = parts.ui_env(base, api_url="http://127.0.0.1:3")
    assert [key for key in env if key.startswith("CURVELAB_")] == ["CURVELAB_API_URL"]
    assert env["CURVELAB_API_URL"] == "http://127.0.0.1:3"
    assert "the-api-token" not in env.values() and not any("pw" in v for v in env.values())
    assert env["STREAMLIT_THEME_BASE"] == "dark" and env["PATH"] == os.environ["PATH"]


def test_curvelab_ui_runs_streamlit_without_the_token_and_with_the_upload_cap(
    tmp_path: Path,
) -> None:
    """The real `curvelab ui`: it execs streamlit, whose environment and command
    line /proc shows."""
    env = dict(
        os.environ,
        CURVELAB_API_TOKEN="the-api-token",
        CURVELAB_MAX_UPLOAD_MB="64",
        CURVELAB_API_URL="http://127.0.0.1:1",
    )
    command = [sys.executable, "-m", "backend.cli.main", "ui", "--ui-port", str(free_port())]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    proc = Path(f"/proc/{process.pid}")
    try:
        wait_for(
            lambda: b"streamlit" in (proc / "cmdline").read_bytes() or process.poll() is not None,
            timeout=60,
            what="curvelab ui to exec streamlit",
        )
        argv = (proc / "cmdline").read_bytes().decode().split("\0")
        seen = dict(
            item.split("=", 1)
            for item in (proc / "environ").read_bytes().decode().split("\0")
            if "=" in item
        )
    finally:
        process.terminate()
        process.wait(30)
    assert argv[argv.index("--server.maxUploadSize") + 1] == "64"
    assert "CURVELAB_API_TOKEN" not in seen
    assert seen["CURVELAB_API_URL"] == "http://127.0.0.1:1"


def test_masked_hides_a_password() -> None:
    assert masked("redis://:s3cret@127.0.0.1:1/0") == "redis://:***@127.0.0.1:1/0"
    assert masked("redis://127.0.0.1:1/0") == "redis://127.0.0.1:1/0"


def test_help_runs_as_a_console_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "backend.cli.main", "up", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "--no-ui" in out and "logs" in out


def test_api_runs_in_the_foreground_with_the_given_settings(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURVELAB_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backend.cli.main",
            "api",
            "--api-port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--redis-url",
            redis_url,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def healthy() -> dict[str, object] | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).json()
            except httpx.HTTPError:
                return None

        health = wait_for(healthy, timeout=60, what="the API")
        assert health["redis"] is True and health["database"] is True
        assert (tmp_path / "data" / "curvelab.db").is_file()
    finally:
        proc.terminate()  # exec'd: the signal reaches uvicorn itself, which shuts down
        # cleanly, then re-raises the signal (uvicorn >= 0.29) to exit by it.
        assert proc.wait(20) in (0, -signal.SIGTERM)


# ---- Redis: found or started ------------------------------------------------


def test_a_redis_that_answers_is_used(redis_url: str, tmp_path: Path) -> None:
    handle = find_or_start(redis_url, tmp_path)
    assert handle.url == redis_url and not handle.own
    handle.stop()  # not ours: nothing to stop
    assert answers(redis_url)
    assert not (tmp_path / "redis").exists()


def test_no_redis_starts_one_of_its_own(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/2"
    handle = find_or_start(url, tmp_path / "data", log_dir=tmp_path / "logs")
    try:
        assert handle.own and handle.url == url
        client = Redis.from_url(handle.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("dir")["dir"] == str(tmp_path / "data" / "redis")
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.set("kept", "1")
        client.close()
    finally:
        handle.stop()
    assert handle.process is not None and handle.process.returncode is not None
    assert not answers(url)
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()
    assert not (tmp_path / "data" / "redis" / "dump.rdb").exists()  # AOF only
    assert (tmp_path / "logs" / "redis.log").is_file()


def test_a_password_in_the_url_protects_the_server_started(tmp_path: Path) -> None:
    url = f"redis://:p%40ss@127.0.0.1:{free_port()}/0"
    handle = find_or_start(url, tmp_path / "data")
    try:
        assert handle.own and answers(url)
        with pytest.raises(RedisUnavailable, match=r"credentials|password"):
            answers(url.replace("p%40ss", "wrong"))
        assert handle.process is not None
        assert "p@ss" not in str(handle.process.args)  # the password is not in `ps`
    finally:
        handle.stop()


def test_a_port_held_by_something_else_moves_to_a_free_one(tmp_path: Path) -> None:
    with socket.socket() as squatter:  # listens, never speaks RESP
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        url = f"redis://127.0.0.1:{port}/0"
        handle = find_or_start(url, tmp_path)
        try:
            assert handle.own and handle.url != url
            assert answers(handle.url)
        finally:
            handle.stop()


def test_a_remote_redis_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RedisUnavailable, match="only on this machine"):
        find_or_start("redis://192.0.2.1:6379/0", tmp_path)  # TEST-NET-1: never answers


# ---- the supervisor -----------------------------------------------------------


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.fixture
def supervisor() -> Iterator[tuple[Supervisor, list[str]]]:
    lines: list[str] = []
    sup = Supervisor(min_backoff=0.1, max_backoff=0.2, stop_timeout=2.0, log=lines.append)
    yield sup, lines
    sup.stop()


def test_a_child_that_dies_is_restarted(
    supervisor: tuple[Supervisor, list[str]], tmp_path: Path
) -> None:
    sup, lines = supervisor
    marks = tmp_path / "starts"
    # Appends one line per start, and dies at once the first two times.
    code = (
        f"import os, sys, time; p = {str(marks)!r}; open(p, 'a').write('x\\n'); "
        "n = len(open(p).read().split()); sys.exit(3) if n < 3 else time.sleep(60)"
    )
    sup.start(ChildSpec("worker", _python(code), dict(os.environ), tmp_path / "worker.log"))

    def restarted_twice() -> bool:
        sup.poll()
        started = marks.read_text().split() if marks.exists() else []
        return len(started) == 3 and sup.pid("worker") is not None

    wait_for(restarted_twice, timeout=30, what="two restarts")
    assert lines[:2] == [
        "worker exited with code 3; restarting in 0.1s",
        "worker exited with code 3; restarting in 0.2s",
    ]
    assert sup.starts("worker") == 3
    assert (tmp_path / "worker.log").read_text().count("=== ") == 3


def test_stop_ends_every_child(supervisor: tuple[Supervisor, list[str]], tmp_path: Path) -> None:
    sup, lines = supervisor
    ignores_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    sup.start(ChildSpec("polite", _python("import time; time.sleep(60)"), dict(os.environ)))
    sup.start(
        ChildSpec("stubborn", _python(ignores_term), dict(os.environ), tmp_path / "stubborn.log")
    )
    pids = [sup.pid("polite"), sup.pid("stubborn")]
    wait_for(lambda: "ready" in (tmp_path / "stubborn.log").read_text(), what="handler set")
    sup.stop()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert lines == []  # a stopped child is not "restarted"


def test_a_child_killed_by_a_signal_is_reported_so(
    supervisor: tuple[Supervisor, list[str]],
) -> None:
    sup, lines = supervisor
    sup.start(ChildSpec("api", _python("import time; time.sleep(60)"), dict(os.environ)))
    pid = sup.pid("api")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    def noticed() -> bool:
        sup.poll()
        return bool(lines)

    wait_for(noticed, what="the exit noticed")
    assert lines[0] == "api exited with code -9 (SIGKILL); restarting in 0.1s"


# ---- up: refuses a taken port before starting anything ------------------------


def test_up_refuses_a_taken_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = run_up(
            UpOptions(
                data_dir=tmp_path,
                host="127.0.0.1",
                api_port=port,
                ui_port=free_port(),
                redis_url="redis://127.0.0.1:1/0",
                no_ui=False,
                api_token=None,
            )
        )
    assert code == 2
    assert f"port {port} for the API is in use" in capsys.readouterr().err
    assert not (tmp_path / "redis").exists()


# ---- demo -----------------------------------------------------------------------


def test_demo_without_an_api_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--api-url", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "is `curvelab up` running?" in capsys.readouterr().err


def test_demo_uploads_and_starts_a_tiny_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_archive(path: Path, classes: int, per_class: int) -> Path:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("a/1.png", b"not really")
        return path

    monkeypatch.setattr(demo, "make_archive", fake_archive)
    seen: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/health":
            return httpx.Response(200, json={"status": "ok"})
        if request.url.path == "/api/datasets":
            return httpx.Response(201, json={"id": "d1", "num_images": 1, "classes": [{}]})
        return httpx.Response(201, json={"id": "r1", "status": "queued"})

    run_id = demo.run_demo(
        api_url="http://api",
        ui_url="http://ui",
        classes=3,
        per_class=10,
        token="t0ken",
        transport=httpx.MockTransport(api),
    )
    assert run_id == "r1"
    assert [r.url.path for r in seen] == ["/api/health", "/api/datasets", "/api/runs"]
    assert all(r.headers["authorization"] == "Bearer t0ken" for r in seen)
    upload = seen[1]
    assert upload.method == "POST" and b'name="file"' in upload.content
    assert b'name="name"' in upload.content
    body = json.loads(seen[2].content)
    assert body == {
        "dataset_id": "d1",
        "config": PRESETS["tiny"][1].model_dump(mode="json"),
        "name": "demo",
    }
    out = capsys.readouterr().out
    assert "http://ui/run?id=r1" in out
    assert (
        'curl -N -H "Authorization: Bearer $CURVELAB_API_TOKEN" http://api/api/runs/r1/events'
        in out
    )
    assert "t0ken" not in out


def test_demo_reports_an_api_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(demo, "make_archive", lambda path, c, p: path.write_bytes(b"") or path)

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/health":
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(413, json={"detail": "upload over 1 MiB"})

    with pytest.raises(demo.DemoError, match="413 upload over 1 MiB"):
        demo.run_demo(
            api_url="http://api",
            ui_url="http://ui",
            classes=3,
            per_class=10,
            token=None,
            transport=httpx.MockTransport(api),
        )
