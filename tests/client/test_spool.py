"""The run's local spool: what is appended is read back, acknowledged records
are not sent again, a finished spool is deleted, a live one is locked."""

from __future__ import annotations

from pathlib import Path

import pytest

from curvelab.spool import Spool, leftovers

URL = "http://127.0.0.1:8000"
RUN = "a" * 32


def test_records_read_back_in_order_and_acks_are_kept(tmp_path: Path) -> None:
    spool = Spool.create(tmp_path, URL, RUN)
    spool.append("create", {"id": RUN})
    spool.append("epochs", {"epochs": [{"epoch": 1, "values": {"loss": 1.0}}]})
    spool.append("finish", {"status": "succeeded"})
    spool.ack([1])
    assert spool.close() is False  # two records are unsent: the file stays
    again = Spool.read(spool.path)
    assert again.api_url == URL and again.run_id == RUN
    assert [(r.seq, r.op) for r in again.pending()] == [(2, "epochs"), (3, "finish")]
    assert again.pending()[0].body == {"epochs": [{"epoch": 1, "values": {"loss": 1.0}}]}


def test_a_spool_whose_records_are_all_done_is_deleted(tmp_path: Path) -> None:
    spool = Spool.create(tmp_path, URL, RUN)
    spool.append("create", {"id": RUN})
    model = tmp_path / f"{RUN}.keras"
    model.write_bytes(b"model")
    spool.append("model", file=model.name)
    spool.ack([1, 2])
    assert spool.close() is True
    assert not spool.path.exists() and not model.exists()


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    spool = Spool.create(tmp_path, URL, RUN)
    spool.append("create", {"id": RUN})
    spool.close()
    with spool.path.open("a") as handle:
        handle.write('{"seq": 2, "op": "epo')  # the process died mid-write
    assert [r.seq for r in Spool.read(spool.path).pending()] == [1]


def test_not_a_spool(tmp_path: Path) -> None:
    path = tmp_path / "other.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(ValueError, match="not a curvelab spool"):
        Spool.read(path)


def test_a_live_spool_is_locked_and_leftovers_are_per_server(tmp_path: Path) -> None:
    live = Spool.create(tmp_path, URL, RUN)
    live.append("create", {"id": RUN})
    other = Spool.create(tmp_path, "http://elsewhere:8000", "b" * 32)
    other.append("create", {"id": "b" * 32})
    other.close()
    reader = Spool.read(live.path)
    assert reader.open_for_ack() is False  # the fit holds it
    assert leftovers(tmp_path, URL, skip=RUN) == []
    assert leftovers(tmp_path, URL) == [live.path]
    live.close()
    assert reader.open_for_ack() is True
    reader.ack([1])
    assert reader.close() is True
