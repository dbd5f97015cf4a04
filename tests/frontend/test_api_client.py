"""The UI's REST client, driven through httpx.MockTransport: headers, errors,
an API that does not answer."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from frontend import api_client
from frontend.api_client import ApiClient, ApiError, ApiUnreachable
from tests.frontend.conftest import LiveApi


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], token: str | None = None
) -> ApiClient:
    return ApiClient("http://api.test/", token, transport=httpx.MockTransport(handler))


def test_reads_the_url_from_the_environment_but_never_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CURVELAB_API_URL", "http://elsewhere:9000/")
    # Even set by mistake, the API's token gives the UI process no power.
    monkeypatch.setenv("CURVELAB_API_TOKEN", "s3cret")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"status": "ok", "redis": True, "database": True, "workers": 1}
        )

    client = ApiClient.from_env(transport=httpx.MockTransport(handler))
    assert client.base_url == "http://elsewhere:9000"
    assert client.health()["workers"] == 1
    assert str(seen[0].url) == "http://elsewhere:9000/api/health"
    assert "authorization" not in seen[0].headers
    assert not client.has_token


def test_a_signed_in_client_sends_its_token_and_the_shared_one_none() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/model"):
            return httpx.Response(200, content=b"PK")
        return httpx.Response(200, json=[])

    shared = client_for(handler)
    alice = shared.signed_in("alice-token")
    bob = shared.signed_in("bob-token")
    alice.list_runs()
    alice.run_model("r1")
    bob.list_runs()
    shared.list_runs()
    assert [r.headers.get("authorization") for r in seen] == [
        "Bearer alice-token",
        "Bearer alice-token",
        "Bearer bob-token",
        None,
    ]
    # One pool; three cache keys, none of which holds a token.
    assert alice._transport is shared._transport
    keys = {shared.cache_key, alice.cache_key, bob.cache_key}
    assert len(keys) == 3 and not any("token" in key for key in keys)
    alice.close()  # a session's client borrows the pool: closing it keeps the pool
    assert not shared._http.is_closed
    shared.list_runs()  # the pool still answers


def test_a_refused_token_calls_the_hook_before_the_error() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "missing or wrong API token"})

    client = client_for(handler).signed_in("old", on_refused=lambda: calls.append("refused"))
    for read in (client.list_runs, lambda: client.mistake_image("r1", 0)):
        with pytest.raises(ApiError) as caught:
            read()
        assert caught.value.status == 401
    assert calls == ["refused", "refused"]


def test_no_token_no_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CURVELAB_API_URL", raising=False)
    monkeypatch.setenv("CURVELAB_API_TOKEN", "")  # compose may pass it empty
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "total": 0, "next": None})

    client = ApiClient.from_env(transport=httpx.MockTransport(handler))
    assert client.base_url == "http://127.0.0.1:8000"
    assert client.list_runs()["items"] == []
    assert "authorization" not in seen[0].headers


def test_an_error_carries_status_and_detail() -> None:
    client = client_for(lambda request: httpx.Response(404, json={"detail": "run not found"}))
    with pytest.raises(ApiError) as caught:
        client.get_run("nope")
    assert (caught.value.status, caught.value.detail) == (404, "run not found")


def test_a_422_names_the_field() -> None:
    body = {
        "detail": [
            {
                "loc": ["body", "config", "batch_size"],
                "msg": "Input should be greater than or equal to 1",
            }
        ]
    }
    client = client_for(lambda request: httpx.Response(422, json=body))
    with pytest.raises(ApiError) as caught:
        client.request("POST", "/api/runs", json={})
    assert caught.value.detail == "config.batch_size: Input should be greater than or equal to 1"


def test_a_non_json_error_is_still_an_api_error() -> None:
    client = client_for(lambda request: httpx.Response(502, text="Bad Gateway"))
    with pytest.raises(ApiError) as caught:
        client.list_datasets()
    assert caught.value.status == 502 and "Bad Gateway" in caught.value.detail


def test_an_api_that_does_not_answer_is_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    client = client_for(refuse)
    with pytest.raises(ApiUnreachable) as caught:
        client.health()
    assert caught.value.status is None
    assert "cannot reach the API at http://api.test" in caught.value.detail


def test_ids_cannot_escape_their_path_segment() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "x"})

    client_for(handler).get_run("../datasets/x")
    assert seen[0].url.raw_path == b"/api/runs/..%2Fdatasets%2Fx"


def test_timeouts_are_set() -> None:
    client = ApiClient("http://api.test")
    timeout = client._http.timeout
    assert timeout.connect == 3.0 and timeout.read == 10.0
    client.close()


# Metrics polled with If-None-Match: a 304 reuses the body kept from last time.


def metrics_api(bodies: dict[str, list[dict]]) -> tuple[ApiClient, list[httpx.Request]]:
    """A fake API serving ``bodies[run id][-1]`` with an ETag, 304 when it matches."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        run_id = request.url.path.split("/")[3]
        version = len(bodies[run_id])
        etag = f'"{run_id}-{version}"'
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        return httpx.Response(200, json=bodies[run_id][-1], headers={"ETag": etag})

    return client_for(handler), seen


def test_metrics_send_the_last_etag_and_reuse_the_body_on_304() -> None:
    first = {"epochs": [{"epoch": 1, "loss": 0.5}], "batches": []}
    bodies = {"r1": [first]}
    client, seen = metrics_api(bodies)
    assert client.run_metrics("r1") == first
    assert "if-none-match" not in seen[0].headers

    reused = client.run_metrics("r1")
    assert seen[1].headers["if-none-match"] == '"r1-1"'
    assert reused == first

    second = {"epochs": [*first["epochs"], {"epoch": 2, "loss": 0.25}], "batches": []}
    bodies["r1"].append(second)
    assert client.run_metrics("r1") == second
    assert seen[2].headers["if-none-match"] == '"r1-1"'
    assert client.run_metrics("r1") == second
    assert seen[3].headers["if-none-match"] == '"r1-2"'


def test_a_reused_body_is_a_new_copy_each_time() -> None:
    client, _ = metrics_api({"r1": [{"epochs": [{"epoch": 1}], "batches": []}]})
    client.run_metrics("r1")["epochs"].append({"epoch": 99})  # a caller that changes its copy
    reused = client.run_metrics("r1")
    reused["epochs"][0]["epoch"] = 42
    assert client.run_metrics("r1") == {"epochs": [{"epoch": 1}], "batches": []}


def test_kept_metrics_are_per_run_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_client, "KEPT_METRICS", 2)
    client, seen = metrics_api({r: [{"epochs": [], "batches": [], "run": r}] for r in "abc"})
    for run_id in "abcb":
        client.run_metrics(run_id)
    tags = [request.headers.get("if-none-match") for request in seen]
    assert tags == [None, None, None, '"b-1"']
    assert len(client._metrics) == 2
    client.run_metrics("a")  # the least recent: no longer kept
    assert seen[-1].headers.get("if-none-match") is None


def test_metrics_without_an_etag_are_not_kept() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"epochs": [], "batches": []})

    client = client_for(handler)
    client.run_metrics("r1")
    client.run_metrics("r1")
    assert "if-none-match" not in seen[1].headers and len(client._metrics) == 0


class CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


def test_the_real_api_answers_the_clients_poll_with_304(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset(num_classes=2, per_class=2)
    run = live_api.create_run(dataset["id"], {"image_size": [16, 16], "filters": [4], "epochs": 4})
    live_api.train_fake_epochs(run["id"], 2, final=None)
    transport = CountingTransport()
    client = ApiClient(live_api.url, transport=transport)
    first = client.run_metrics(run["id"])
    again = client.run_metrics(run["id"])
    assert transport.statuses == [200, 304] and again == first
    live_api.train_fake_epochs(run["id"], 1, final=None)
    grown = client.run_metrics(run["id"])
    assert transport.statuses[-1] == 200
    assert [row["epoch"] for row in grown["epochs"]] == [1, 2, 3]
    client.close()


def test_list_runs_sends_filters_as_query_parameters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "total": 0, "next": None})

    client = client_for(handler)
    client.list_runs(limit=50, status=["succeeded", "failed"], tag=[], q=None, sort="-created")
    params = seen[0].url.params
    assert params.get_list("status") == ["succeeded", "failed"]
    assert params["limit"] == "50" and params["sort"] == "-created"
    assert "tag" not in params and "q" not in params


def test_a_dataset_with_runs_raises_with_them() -> None:
    runs = [{"id": "r1", "name": "one", "status": "succeeded"}]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.params.get("delete_runs") == "true":
            return httpx.Response(204)
        return httpx.Response(409, json={"detail": "dataset has 1 run(s)", "runs": runs})

    client = client_for(handler)
    with pytest.raises(ApiError) as caught:
        client.delete_dataset("d1")
    assert caught.value.status == 409 and caught.value.runs == runs
    client.delete_dataset("d1", delete_runs=True)
    assert seen[-1].method == "DELETE" and seen[-1].url.params["delete_runs"] == "true"


def test_metrics_of_another_bound_are_kept_apart() -> None:
    """The ETag names the bound: a body kept for one bound never answers another's 304."""

    def handler(request: httpx.Request) -> httpx.Response:
        bound = request.url.params.get("max_points", "default")
        tag = f'"v1-{bound}"'
        if request.headers.get("if-none-match") == tag:
            return httpx.Response(304, headers={"etag": tag})
        return httpx.Response(200, json={"epochs": [], "bound": bound}, headers={"etag": tag})

    client = client_for(handler)
    assert client.run_metrics("r1", 20)["bound"] == "20"
    assert client.run_metrics("r1")["bound"] == "default"
    assert client.run_metrics("r1", 20)["bound"] == "20"  # from the kept body, on a 304
