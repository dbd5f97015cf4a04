"""GET /api/presets: named TrainConfigs; ``seed-cnn`` is the question's network."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.schemas import Preset
from backend.train_config import PRESETS

router = APIRouter(prefix="/presets", tags=["presets"])


@router.get("", response_model=list[Preset])
def list_presets() -> list[Preset]:
    """Named training configurations to start from."""
    return [
        Preset(name=name, description=description, config=config)
        for name, (description, config) in PRESETS.items()
    ]
