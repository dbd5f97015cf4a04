"""Property-based: schemathesis generates requests from the app's own OpenAPI
schema (valid and invalid ones) and sends them to the real app, in process,
over the test Redis and both databases. No answer may be a server error.

Path ids are drawn from random text and from a real dataset and a real
finished run (with epochs and events), so the routes' own code runs, not only
their 404s. Each operation gets its own bounded Hypothesis run: the whole
takes about half a minute on two cores. (schemathesis' ``from_fixture`` does
not work with this pytest, hence the loop over operations.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from redis import Redis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from backend import events, runs
from backend.db import Database, Dataset
from backend.settings import Settings
from backend.train_config import TrainConfig
from tests.conftest import BOTH_DATABASES

pytestmark = BOTH_DATABASES

EXAMPLES_PER_OPERATION = 60


@pytest.fixture
def api_schema(settings: Settings) -> Iterator[schemathesis.BaseSchema]:
    from backend.api.main import create_app

    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    asgi.shutdown_lifespans()  # closes the app's SQL and Redis clients


@pytest.fixture
def known_ids(database: Database, make_dataset_row, redis_client: Redis) -> dict[str, str]:
    """A dataset row and a finished run of it, with two epochs in SQL and on its stream."""
    dataset_id = make_dataset_row()
    config = TrainConfig(image_size=(16, 16), filters=[4], epochs=2)
    with database.session() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        run_id = runs.create_run(session, dataset, config, name="fuzzed").id
        runs.mark_running(session, redis_client, run_id)
        for epoch in (1, 2):
            values = {"loss": 1.0 / epoch, "val_loss": 1.4 / epoch}
            runs.record_epoch(session, run_id, epoch, values, [])
            events.publish(redis_client, run_id, events.epoch_event(epoch, values))
        # Final, so the event stream ends instead of following the run.
        runs.finish(session, redis_client, run_id, "succeeded")
    return {"dataset_id": dataset_id, "run_id": run_id}


def _for_dataset(case: schemathesis.Case, known_ids: dict[str, str]) -> schemathesis.Case:
    if isinstance(case.body, dict):
        case.body["dataset_id"] = known_ids["dataset_id"]
    return case


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_is_a_server_error(
    api_schema: schemathesis.BaseSchema, known_ids: dict[str, str], mode: GenerationMode
) -> None:
    failures: list[str] = []
    sent = 0
    # An invalid schema fails here.
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    # Deletes last: the known run and dataset, deleted first, would leave the
    # other operations nothing but 404s.
    operations.sort(key=lambda operation: operation.label.startswith("DELETE "))
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        strategies = [operation.as_strategy(generation_mode=mode)]
        if names and names <= known_ids.keys():
            real = {name: known_ids[name] for name in names}
            strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=real))
        if operation.label == "POST /api/runs":
            # Random configs for the real dataset, not only for ids that miss.
            strategies.append(strategies[0].map(lambda case: _for_dataset(case, known_ids)))

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            case.call_and_validate(checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:
            continue  # nothing in this operation can be made invalid (negative mode)
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert sent > 100  # the run did send requests
