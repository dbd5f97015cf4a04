"""``curvelab sync``: a spool's unsent records go in order, once; the command
says what it sent and fails while the server is unreachable."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from curvelab import cli
from curvelab.spool import Spool
from curvelab.sync import sync
from tests.client.stub_api import StubApi, serve
from tests.conftest import free_port

RUN = "e" * 32


@pytest.fixture
def stub() -> Iterator[StubApi]:
    yield from serve(StubApi())


def _spool(folder: Path, url: str, run_id: str = RUN, acked: int = 0) -> Path:
    spool = Spool.create(folder, url, run_id)
    spool.append("create", {"id": run_id})
    for epoch in (1, 2, 3):
        spool.append("epochs", {"epochs": [{"epoch": epoch, "values": {"loss": 1.0 / epoch}}]})
    spool.append("batches", {"batches": [{"step": 4, "epoch": 0.5, "values": {}}]})
    spool.append("finish", {"status": "succeeded"})
    spool.ack(range(1, acked + 1))
    spool.close()
    return spool.path


def test_sync_sends_the_unsent_records_in_order(tmp_path: Path, stub: StubApi) -> None:
    path = _spool(tmp_path, stub.url, acked=2)  # the create and epoch 1 got through
    lines: list[str] = []
    result = sync(path, echo=lines.append)
    assert result.ok and result.sent == 4 and result.run_id == RUN
    assert [r.op for r in stub.requests] == ["epochs", "batches", "finish"]
    assert stub.epochs() == [2, 3]  # merged in one request
    assert lines == ["  sent epochs 2–3", "  sent batches 4", "  sent finish (succeeded)"]
    assert not path.exists()


def test_cli_sync_exits_non_zero_while_the_server_is_unreachable(
    tmp_path: Path, stub: StubApi, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _spool(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert cli.main(["sync", str(path)]) == 1
    assert "6 left" in capsys.readouterr().err
    assert len(Spool.read(path).pending()) == 6
    # The server moved: --url sends there.
    assert cli.main(["sync", str(path), "--url", stub.url]) == 0
    assert "6 record(s) sent" in capsys.readouterr().out
    assert not path.exists()


def test_cli_sync_all_takes_the_spool_folder(
    tmp_path: Path, stub: StubApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _spool(tmp_path, stub.url, RUN)
    second = _spool(tmp_path, stub.url, "f" * 32, acked=5)
    monkeypatch.setenv("CURVELAB_SPOOL_DIR", str(tmp_path))
    assert cli.main(["sync", "--all"]) == 0
    assert not first.exists() and not second.exists()
    assert len(stub.accepted("finish")) == 2


def test_a_refused_record_is_reported_and_not_sent_again(tmp_path: Path, stub: StubApi) -> None:
    path = _spool(tmp_path, stub.url)
    stub.fail = [201, 404, 404, 404, 404]  # merged epochs, then each: the server lost the run
    result = sync(path)
    assert result.left == 0 and len(result.dropped) == 3 and "HTTP 404" in result.dropped[0]
    assert not path.exists()


def test_a_spool_in_use_by_a_fit_is_left_alone(tmp_path: Path, stub: StubApi) -> None:
    live = Spool.create(tmp_path, stub.url, RUN)
    live.append("create", {"id": RUN})
    result = sync(live.path)
    assert not result.ok and "in use" in (result.error or "")
    assert stub.requests == []
    live.close()


def test_other_commands_belong_to_the_server_package(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["up"]) == 2
    assert "server package" in capsys.readouterr().err
    assert cli.main(["sync"]) == 2


def test_the_console_entry_point_runs_without_keras() -> None:
    code = (
        "import sys; from curvelab.cli import main; code = main(['nothing']); "
        "assert 'keras' not in sys.modules, 'keras imported'; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
