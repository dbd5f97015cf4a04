"""Abusive run requests over the real app: every bad config is a 422 whose
detail names the field; unknown or impossible ids are 404s, never 500s."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.conftest import BOTH_DATABASES

TINY: dict[str, object] = {"image_size": [16, 16], "filters": [4, 8], "epochs": 2, "batch_size": 8}

# (what the detail must name, the config patch)
BAD_CONFIGS: dict[str, tuple[str, dict[str, object]]] = {
    "zero image side": ("image_size[0] must be between 4 and 1024, got 0", {"image_size": [0, 16]}),
    "negative image side": ("image_size[1]", {"image_size": [16, -5]}),
    "absurd image size": ("image_size[0]", {"image_size": [100_000, 100_000]}),
    "three image sides": ("config.image_size", {"image_size": [16, 16, 3]}),
    "zero batch": ("config.batch_size", {"batch_size": 0}),
    "negative batch": ("config.batch_size", {"batch_size": -8}),
    "absurd batch": ("config.batch_size", {"batch_size": 10**9}),
    "zero epochs": ("config.epochs", {"epochs": 0}),
    "absurd epochs": ("config.epochs", {"epochs": 10**7}),
    "zero filters": ("filters[1] must be between 1 and 2048, got 0", {"filters": [4, 0]}),
    "negative filters": ("filters[0]", {"filters": [-4]}),
    "absurd filters": ("filters[0]", {"filters": [10**6]}),
    "no blocks": ("config.filters", {"filters": []}),
    "too many pooling blocks": ("filters: 5 pooling blocks", {"filters": [4] * 5}),
    "more blocks than allowed": ("config.filters", {"filters": [4] * 9}),
    "a huge list": ("config.filters", {"filters": [4] * 100_000}),
    "zero dense": ("config.dense_units", {"dense_units": 0}),
    "zero kernel": ("config.kernel_size", {"kernel_size": 0}),
    "absurd kernel": ("config.kernel_size", {"kernel_size": 99}),
    "zero convs": ("config.convs_per_block", {"convs_per_block": 0}),
    "unknown optimizer": ("config.optimizer", {"optimizer": "adagrad"}),
    "unknown colour mode": ("config.color_mode", {"color_mode": "cmyk"}),
    "zero split": ("config.validation_split", {"validation_split": 0}),
    "whole split": ("config.validation_split", {"validation_split": 1}),
    "negative split": ("config.validation_split", {"validation_split": -0.2}),
    "split over one": ("config.validation_split", {"validation_split": 1.5}),
    "zero learning rate": ("config.learning_rate", {"learning_rate": 0}),
    "absurd learning rate": ("config.learning_rate", {"learning_rate": 1e9}),
    "momentum of one": ("config.momentum", {"momentum": 1.0}),
    "bn momentum of one": ("config.bn_momentum", {"bn_momentum": 1}),
    "dropout of one": ("config.dropout", {"dropout": 1.0}),
    "zero patience": ("config.early_stopping_patience", {"early_stopping_patience": 0}),
    "negative seed": ("config.seed", {"seed": -1}),
    "huge seed": ("config.seed", {"seed": 2**64}),
    "rotation of a turn": ("config.augment.rotate", {"augment": {"rotate": 1.0}}),
    "unknown augmentation": ("config.augment.shear", {"augment": {"shear": 0.1}}),
    "text for a number": ("config.batch_size", {"batch_size": "many"}),
    "fraction for an integer": ("config.epochs", {"epochs": 3.5}),
    "text for a list": ("config.image_size", {"image_size": "big"}),
    "object for a list": ("config.filters", {"filters": {"a": 1}}),
    "text for a flag": ("config.batch_norm", {"batch_norm": "maybe"}),
    "text for an object": ("config.augment", {"augment": "yes"}),
    "list for a number": ("config.dropout", {"dropout": [0.1]}),
    "null for a number": ("config.epochs", {"epochs": None}),
    "an unknown knob": ("config.warp_speed", {"warp_speed": 9}),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_is_a_422_naming_the_field(api: TestClient, make_dataset_row, case) -> None:
    field, patch = BAD_CONFIGS[case]
    reply = api.post("/api/runs", json={"dataset_id": make_dataset_row(), "config": TINY | patch})
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert field in detail, detail
    assert len(reply.content) < 5000  # a huge input is never echoed back
    assert api.get("/api/runs").json()["items"] == []


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(api: TestClient, make_dataset_row, value: str) -> None:
    for knob in ("learning_rate", "dropout", "validation_split", "momentum", "bn_momentum"):
        dataset_id = make_dataset_row()
        body = f'{{"dataset_id": "{dataset_id}", "config": {{"{knob}": {value}}}}}'
        reply = api.post("/api/runs", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 422, (knob, reply.text)
        assert f"config.{knob}" in reply.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": TINY}, "dataset_id: Field required"),
        ({"dataset_id": 123, "config": TINY}, "dataset_id"),
        ({"dataset_id": "f" * 65, "config": TINY}, "dataset_id"),
        ({"dataset_id": "f" * 32, "config": TINY, "name": "n" * 201}, "name"),
        ({"dataset_id": "f" * 32, "config": TINY, "name": "tab\there"}, "name"),
        ({"dataset_id": "f" * 32, "config": TINY, "priority": "high"}, "priority"),
        ({"dataset_id": "f" * 32, "config": "seed-cnn"}, "config"),
        ([{"dataset_id": "f" * 32}], "Input should be a valid dictionary"),
    ],
)
def test_a_bad_request_body_is_a_422_naming_the_field(api: TestClient, body, field: str) -> None:
    reply = api.post("/api/runs", json=body)
    assert reply.status_code == 422, reply.text
    assert field in reply.json()["detail"]


def test_many_errors_are_summed_up(api: TestClient) -> None:
    numbers = ["validation_split", "seed", "convs_per_block", "kernel_size", "bn_momentum"]
    numbers += ["dropout", "dense_units", "learning_rate", "momentum", "batch_size", "epochs"]
    numbers += ["early_stopping_patience", "batch_metrics_every"]
    config = {"filters": ["x"] * 8, "image_size": ["a", "b"]} | {knob: "x" for knob in numbers}
    reply = api.post("/api/runs", json={"dataset_id": 5, "config": config})  # 24 errors
    assert reply.status_code == 422
    body = reply.json()
    assert body["detail"].endswith("and 4 more")
    assert len(body["errors"]) == 20
    assert all("input" not in error for error in body["errors"])


def test_an_unknown_dataset_is_a_404(api: TestClient) -> None:
    for dataset_id in ("f" * 32, "nothex", "../../etc", "\x00"):
        reply = api.post("/api/runs", json={"dataset_id": dataset_id, "config": TINY})
        assert reply.status_code == 404, reply.text
        assert reply.json()["detail"].startswith("dataset ")


def _id_routes(api: TestClient) -> list[tuple[str, str]]:
    paths = api.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), path)
        for path, methods in paths.items()
        if "_id}" in path
        for method in methods
    ]


ODD_IDS = ["nothex", "%00", "a%00b", "ABCDEF", "0x1f", "%20", "f" * 65, "%E2%80%AE", "..", "-1"]


@BOTH_DATABASES
def test_an_id_the_server_never_made_is_a_404_in_every_path(api: TestClient) -> None:
    routes = _id_routes(api)
    assert len(routes) >= 9
    for method, path in routes:
        for odd in ODD_IDS:
            url = path.replace("{run_id}", odd).replace("{dataset_id}", odd)
            reply = api.request(method, url)
            assert reply.status_code == 404, (method, url, reply.text)
            assert reply.json()["detail"].lower().endswith("not found"), (method, url, reply.text)


@BOTH_DATABASES
@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("dataset_id=%00", 200),
        ("dataset_id=nothex", 200),
        ("status=%00", 422),
        ("status=done", 422),
    ],
)
def test_odd_run_filters_are_not_server_errors(api: TestClient, query: str, status: int) -> None:
    reply = api.get(f"/api/runs?{query}")
    assert reply.status_code == status, reply.text
    if status == 200:
        assert reply.json() == {"items": [], "total": 0, "next": None}
    else:
        assert "status" in reply.json()["detail"]


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{", 422),
        (b"\xff\xfe", 422),
        (b"[" * 100_000, 400),  # too deep to parse: FastAPI's own 400
        (json.dumps({"dataset_id": "\ud800", "config": {}}).encode(), 422),
        (json.dumps({"dataset_id": "f" * 32, "name": "\ud800", "config": {}}).encode(), 422),
        (json.dumps({"dataset_id": "f" * 32, "config": {"\ud800" * 999: 1}}).encode(), 422),
    ],
)
def test_a_body_that_is_not_json_or_not_text(api: TestClient, content: bytes, status: int) -> None:
    reply = api.post("/api/runs", content=content, headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    assert len(reply.json()["detail"]) < 1000
