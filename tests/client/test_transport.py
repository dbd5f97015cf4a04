"""The side channel never hurts the fit: a server that fails, refuses, hangs
or is not there delays no epoch, and records arrive once, in order."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import curvelab
from curvelab.spool import Spool
from curvelab.transport import Backoff, Transport
from tests.client import models
from tests.client.stub_api import StubApi, serve
from tests.conftest import free_port, wait_for

RUN = "c" * 32


@pytest.fixture
def stub() -> Iterator[StubApi]:
    yield from serve(StubApi())


def _fit(callback: curvelab.Callback, epochs: int = 3) -> float:
    x, y = models.images(48)
    model = models.conv_bn()
    started = time.monotonic()
    model.fit(x, y, batch_size=8, epochs=epochs, callbacks=[callback], verbose=0)
    return time.monotonic() - started


def test_failures_are_retried_and_records_arrive_once_in_order(
    stub: StubApi, tmp_path: Path
) -> None:
    stub.fail = [503, 503, 429]  # the create twice, then the next request
    x, y = models.images(16, seed=1)
    callback = curvelab.Callback(
        "retried", (x, y), url=stub.url, spool_dir=tmp_path, batch_every=2, flush_timeout=20
    )
    _fit(callback)
    assert callback.status == "succeeded"
    ops = [request.op for request in stub.accepted()]
    assert ops[0] == "create" and ops[-1] == "finish" and ops.count("create") == 1
    assert stub.accepted("create")[0].body["id"] == callback.run_id
    assert stub.epochs() == [1, 2, 3]
    steps = stub.steps()
    assert steps == sorted(set(steps)) and steps[-1] == 18  # 6 steps × 3 epochs, every 2nd
    assert len(stub.requests) == len(stub.accepted()) + 3
    assert not list(tmp_path.glob("*.jsonl"))  # all sent: the spool is gone


def test_unreachable_server_fit_finishes_promptly_and_the_spool_is_kept(
    stub: StubApi, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    baseline = _fit(curvelab.Callback("warm", url=url, spool_dir=tmp_path / "a", flush_timeout=0))
    callback = curvelab.Callback("offline", url=url, spool_dir=tmp_path / "b", flush_timeout=1)
    seconds = _fit(callback)
    # The end of fit waits flush_timeout at most: no epoch waits for the network.
    assert seconds < baseline + 5
    assert callback.spool_path is not None and callback.spool_path.exists()
    pending = Spool.read(callback.spool_path).pending()
    assert pending[0].op == "create" and pending[-1].op == "finish"
    result = curvelab.sync.sync(callback.spool_path, url=stub.url)
    assert result.ok and result.left == 0
    assert stub.epochs() == [1, 2, 3]
    assert not callback.spool_path.exists()


def test_a_server_that_never_answers_does_not_hold_the_fit(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections, answers nothing
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        callback = curvelab.Callback("hung", url=url, spool_dir=tmp_path, flush_timeout=1)
        seconds = _fit(callback, epochs=2)
        assert seconds < 40
        assert Spool.read(callback.spool_path).pending()[-1].op == "finish"  # type: ignore[arg-type]
    finally:
        listener.close()


def test_a_refused_record_is_dropped_and_the_rest_goes_on(tmp_path: Path, stub: StubApi) -> None:
    spool = Spool.create(tmp_path, stub.url, RUN)
    spool.append("create", {"id": RUN})
    for epoch in (1, 2, 3):
        spool.append("epochs", {"epochs": [{"epoch": epoch, "values": {}}]})
    # The create goes; epochs 1–3 go merged and are refused, then one by one:
    # 1 is taken, 2 refused for good, 3 taken.
    stub.fail = [201, 422, 200, 422]
    transport = Transport(spool, token="secret-token", backoff=Backoff(base=0.01))
    assert transport.close(10) is True
    assert stub.requests[0].headers["Authorization"] == "Bearer secret-token"
    assert [r.status for r in stub.requests] == [201, 422, 200, 422, 200]
    assert [len(r.body["epochs"]) for r in stub.requests[1:]] == [3, 1, 1, 1]
    assert stub.epochs() == [1, 3]
    assert not spool.path.exists()  # nothing is retried forever


def test_a_refused_token_stops_sending_and_keeps_the_records(tmp_path: Path, stub: StubApi) -> None:
    spool = Spool.create(tmp_path, stub.url, RUN)
    transport = Transport(spool, token=None, backoff=Backoff(base=0.01))
    stub.fail = [401]
    transport.submit("create", {"id": RUN})
    wait_for(lambda: transport.denied, timeout=10, what="the 401")
    transport.submit("finish", {"status": "succeeded"})
    assert transport.close(0.5) is False
    assert len(stub.requests) == 1
    assert [r.op for r in Spool.read(spool.path).pending()] == ["create", "finish"]


def test_leftover_spools_are_uploaded_by_the_next_fit(tmp_path: Path, stub: StubApi) -> None:
    old = Spool.create(tmp_path, stub.url, RUN)
    old.append("create", {"id": RUN})
    old.append("epochs", {"epochs": [{"epoch": 1, "values": {"loss": 1.0}}]})
    old.append("finish", {"status": "succeeded"})
    old.close()
    elsewhere = Spool.create(tmp_path, "http://127.0.0.1:9", "d" * 32)  # another server's
    elsewhere.append("create", {"id": "d" * 32})
    elsewhere.close()
    callback = curvelab.Callback("next", url=stub.url, spool_dir=tmp_path, flush_timeout=10)
    _fit(callback, epochs=1)
    wait_for(lambda: not old.path.exists(), timeout=20, what="the leftover spool to go")
    old_requests = [r for r in stub.accepted() if RUN in r.path or (r.body or {}).get("id") == RUN]
    assert [r.op for r in old_requests] == ["create", "epochs", "finish"]
    assert elsewhere.path.exists()


def test_records_submitted_from_many_threads_are_sent_once(tmp_path: Path, stub: StubApi) -> None:
    spool = Spool.create(tmp_path, stub.url, RUN)
    transport = Transport(spool, token=None, backoff=Backoff(base=0.01))
    stub.fail = [500, 201, 503]
    transport.submit("create", {"id": RUN})

    def points(start: int) -> None:
        for step in range(start, start + 50):
            transport.submit("batches", {"batches": [{"step": step, "epoch": 0.0, "values": {}}]})

    threads = [threading.Thread(target=points, args=(1 + 50 * i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert transport.close(10) is True
    assert sorted(stub.steps()) == list(range(1, 201))
