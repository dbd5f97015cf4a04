"""``curvelab demo``: a first run for a new user, with nothing to download.

Renders a small dataset of characters, uploads it, and starts a run with the
``tiny`` preset, sized so that curves move within a minute on a laptop CPU.
Everything goes through the public REST API, exactly as a script would.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import httpx

from backend.train_config import PRESETS

PRESET = "tiny"


class DemoError(RuntimeError):
    """Something the user can act on; the message says what."""


def run_demo(
    *,
    api_url: str,
    ui_url: str,
    classes: int,
    per_class: int,
    token: str | None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """Upload a generated dataset, start a run, print where to watch it; return the run id."""
    if classes < 2 or per_class < 5:
        raise DemoError("--classes must be at least 2 and --per-class at least 5")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # Uploads and run creation may take a while on a busy machine; connecting should not.
    timeout = httpx.Timeout(120.0, connect=5.0)
    with httpx.Client(
        base_url=api_url, headers=headers, timeout=timeout, transport=transport
    ) as client:
        _request(client, "GET", "/api/health", api_url)
        with tempfile.TemporaryDirectory(prefix="curvelab-demo-") as folder:
            archive = make_archive(Path(folder) / "demo-characters.zip", classes, per_class)
            print(f"generated {classes} classes × {per_class} images: {archive.name}")
            with archive.open("rb") as fh:
                dataset = _request(
                    client,
                    "POST",
                    "/api/datasets",
                    api_url,
                    files={"file": (archive.name, fh, "application/zip")},
                    data={"name": "demo characters"},
                )
        print(
            f"uploaded dataset {dataset['id']}: {dataset.get('num_images')} images, "
            f"{len(dataset.get('classes', []))} classes"
        )
        config = PRESETS[PRESET][1].model_dump(mode="json")
        run = _request(
            client,
            "POST",
            "/api/runs",
            api_url,
            json={"dataset_id": dataset["id"], "config": config, "name": "demo"},
        )
    run_id = str(run["id"])
    auth = ' -H "Authorization: Bearer $CURVELAB_API_TOKEN"' if token else ""
    print(f"started run {run_id} ({PRESET} preset, {config['epochs']} epochs)")
    print(f"  watch it:   {ui_url}/run?id={run_id}")
    print(f"  or follow:  curl -N{auth} {api_url}/api/runs/{run_id}/events")
    return run_id


def make_archive(path: Path, classes: int, per_class: int) -> Path:
    # Imported here: only the demo needs the renderer (and Pillow's fonts).
    from backend.synthetic import write_character_zip

    return write_character_zip(
        path, num_classes=classes, per_class=per_class, image_size=(32, 32), mode="L", seed=0
    )


def _request(
    client: httpx.Client, method: str, path: str, api_url: str, **kwargs: Any
) -> dict[str, Any]:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise DemoError(
            f"cannot reach the API at {api_url} ({exc.__class__.__name__}); "
            "is `curvelab up` running?"
        ) from exc
    if response.status_code >= 400:
        raise DemoError(f"{method} {path} failed: {response.status_code} {_detail(response)}")
    body = response.json()
    if not isinstance(body, dict):
        raise DemoError(f"{method} {path} answered something that is not a JSON object")
    return body


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail is not None else response.text[:200]
