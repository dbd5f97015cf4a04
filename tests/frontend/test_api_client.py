"""The UI's REST client, driven through httpx.MockTransport: headers, errors,
an API that does not answer."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from frontend.api_client import ApiClient, ApiError, ApiUnreachable


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], token: str | None = None
) -> ApiClient:
    return ApiClient("http://api.test/", token, transport=httpx.MockTransport(handler))


def test_reads_url_and_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURVELAB_API_URL", "http://elsewhere:9000/")
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
    assert seen[0].headers["authorization"] == "Bearer s3cret"


def test_no_token_no_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CURVELAB_API_URL", raising=False)
    monkeypatch.setenv("CURVELAB_API_TOKEN", "")  # compose may pass it empty
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    client = ApiClient.from_env(transport=httpx.MockTransport(handler))
    assert client.base_url == "http://127.0.0.1:8000"
    assert client.list_runs() == []
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
