"""A live API for page tests: the real app under uvicorn in a thread, on the
suite's Redis and a temporary SQLite, with factories that seed datasets and
runs (with stored epochs) without a worker. ``locked_api`` is the same API
with a token (CURVELAB_API_TOKEN on the API, never in the UI's environment)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from streamlit.testing.v1 import AppTest

from backend import events, run_summary, runs
from backend.api.main import create_app
from backend.db import Database, EpochMetrics, Run, RunTag, Sweep
from backend.settings import Settings
from backend.synthetic import write_character_zip
from backend.train_config import TrainConfig
from frontend.api_client import shared_client
from tests.conftest import free_port, wait_for

API_TOKEN = "page-tests-token-0123456789"


@dataclass
class LiveApi:
    url: str
    settings: Settings
    database: Database
    tmp_path: Path
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    @property
    def headers(self) -> dict[str, str]:
        """What a script sends: the API's token, when it has one."""
        token = self.settings.api_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def restart(self, **changes: Any) -> None:
        """Stop the API and serve it again on the same port, with ``changes``
        to its settings (e.g. a new ``api_token``)."""
        self.stop()
        self.settings = self.settings.model_copy(update=changes)
        port = int(self.url.rsplit(":", 1)[1])
        self.server, self.thread = _serve(self.settings, port)

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)

    def upload_dataset(
        self, name: str = "letters", num_classes: int = 3, per_class: int = 8
    ) -> dict[str, Any]:
        archive = write_character_zip(
            self.tmp_path / f"{name}.zip",
            num_classes=num_classes,
            per_class=per_class,
            image_size=(16, 16),
            mode="L",
        )
        with archive.open("rb") as handle:
            reply = httpx.post(
                f"{self.url}/api/datasets",
                files={"file": (archive.name, handle)},
                data={"name": name},
                headers=self.headers,
                timeout=60,
            )
        reply.raise_for_status()
        return dict(reply.json())

    def create_run(
        self, dataset_id: str, config: dict[str, Any] | None = None, name: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"dataset_id": dataset_id, "config": config or {}}
        if name:
            body["name"] = name
        reply = httpx.post(f"{self.url}/api/runs", json=body, headers=self.headers, timeout=10)
        reply.raise_for_status()
        return dict(reply.json())

    def train_fake_epochs(
        self, run_id: str, epochs: int, final: str | None = "succeeded", steps_per_epoch: int = 4
    ) -> None:
        """Record ``epochs`` epochs (and batch points) as a worker would, without
        training: page tests need stored curves, not TensorFlow."""
        with self.database.session() as session:
            runs.mark_running(session, None, run_id)
            run = session.get(Run, run_id)
            assert run is not None
            start = run.epochs_done
            for epoch in range(start + 1, start + epochs + 1):
                loss = 2.0 * math.exp(-0.4 * epoch)
                values = {
                    "loss": loss,
                    "accuracy": 1 - loss / 2.5,
                    "val_loss": loss * 1.3 + 0.1,
                    "val_accuracy": 1 - loss / 2.2,
                    "seconds": 1.5,
                    "images_per_sec": 400.0,
                    "lr": 0.001,
                }
                batches = [
                    (
                        (epoch - 1) * steps_per_epoch + s,
                        epoch - 1 + s / steps_per_epoch,
                        {"loss": loss * (1.1 - 0.05 * s), "accuracy": 0.5},
                    )
                    for s in range(1, steps_per_epoch + 1)
                ]
                runs.record_epoch(session, run_id, epoch, values, batches)
            if final:
                runs.finish(session, None, run_id, final)

    def add_run(
        self,
        dataset_id: str | None,
        name: str,
        config: dict[str, Any] | None = None,
        *,
        val_losses: Sequence[float] = (),
        tags: Sequence[str] = (),
        **columns: Any,
    ) -> str:
        """A run made directly in SQL (no queue, no worker: a list of thousands
        is quick to make), with an epoch row per ``val_losses`` (val_accuracy
        1 − val_loss/3, 2 s each) and its summary as the API keeps it;
        ``columns`` set any other Run column (status, created_at, sweep_id...)."""
        with self.database.session() as session:
            run = Run(
                name=name,
                dataset_id=dataset_id,
                config=TrainConfig.model_validate(config or {}).model_dump(mode="json"),
                status=columns.pop("status", "succeeded"),
                epochs_done=len(val_losses),
                tag_rows=[RunTag(tag=tag) for tag in tags],
                **columns,
            )
            session.add(run)
            session.flush()
            for epoch, loss in enumerate(val_losses, start=1):
                values = {"loss": loss * 0.8, "val_loss": loss, "seconds": 2.0}
                values |= {"accuracy": 1 - loss / 4, "val_accuracy": 1 - loss / 3}
                session.add(EpochMetrics(run_id=run.id, epoch=epoch, values=values))
            session.flush()
            run_summary.refresh(session, run.id)
            session.commit()
            return run.id

    def add_sweep(self, dataset_id: str | None, space: dict[str, Any], **columns: Any) -> str:
        """A sweep row made directly in SQL (no study behind it: nothing runs)."""
        fields: dict[str, Any] = {
            "name": "a sweep",
            "method": "grid",
            "max_runs": 4,
            "parallel": 2,
            "metric": "val_loss",
            "direction": "minimize",
            "status": "running",
            "config": TrainConfig().model_dump(mode="json"),
        }
        with self.database.session() as session:
            sweep = Sweep(dataset_id=dataset_id, space=space, **(fields | columns))
            session.add(sweep)
            session.commit()
            return sweep.id

    def publish(self, run_id: str, event: dict[str, Any]) -> None:
        from redis import Redis

        events.publish(Redis.from_url(self.settings.redis_url), run_id, event)


def _serve(settings: Settings, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="the API to start")
    return server, thread


def _live(
    settings: Settings, database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveApi]:
    port = free_port()
    server, thread = _serve(settings, port)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("CURVELAB_API_URL", url)
    # The UI's own environment never has it (see backend/cli/parts.py ui_env).
    monkeypatch.delenv("CURVELAB_API_TOKEN", raising=False)
    shared_client.clear()  # the UI caches its shared client per process
    api = LiveApi(url, settings, database, tmp_path, server, thread)
    yield api
    shared_client.clear()
    api.stop()


@pytest.fixture
def live_api(
    settings: Settings, database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveApi]:
    yield from _live(settings, database, tmp_path, monkeypatch)


@pytest.fixture
def locked_api(
    settings: Settings, database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveApi]:
    """The live API with a token: a UI session must sign in to see anything."""
    locked = settings.model_copy(update={"api_token": API_TOKEN})
    yield from _live(locked, database, tmp_path, monkeypatch)


FRONTEND = Path(__file__).resolve().parents[2] / "frontend"


def page_path(name: str) -> str:
    """Path of a page file, for ``AppTest.from_file``."""
    return str(FRONTEND / "app_pages" / f"{name}.py")


PageFactory = Callable[[str], str]


def open_app_page(name: str, **query: str) -> AppTest:
    """Run a page inside the whole app (navigation, health banner), where its
    page links and ``st.switch_page`` resolve as they do in a browser."""
    app = AppTest.from_file(str(FRONTEND / "streamlit_app.py"), default_timeout=30)
    # Before a first run AppTest knows pages by file name, not by url_path.
    app.run().switch_page(f"app_pages/{name}.py")
    for key, value in query.items():
        app.query_params[key] = value
    return app.run()
