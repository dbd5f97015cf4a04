"""One Settings object per process, read once from ``CURVELAB_*`` variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CURVELAB_", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(
        default=Path("data"), description="Uploaded datasets, run artifacts, the SQLite file."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; defaults to SQLite under the data dir."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Celery broker and run event streams."
    )
    api_token: str | None = Field(
        default=None, description="When set, every /api route but /api/health needs it."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Browser origins (comma-separated) allowed to call the API from another "
        "site; none by default, so no CORS headers are sent.",
    )
    api_url: str = Field(
        default="http://127.0.0.1:8000", description="Where the UI and the CLI reach the API."
    )
    max_upload_mb: int = Field(default=1024, ge=1, description="Largest dataset upload, in MiB.")
    # Every other request body is JSON of a few KiB (a TrainConfig): a small
    # cap keeps a stranger's 1 GiB body out of the JSON parser.
    max_json_kb: int = Field(
        default=1024, ge=1, description="Largest body of any request but an upload, in KiB."
    )
    max_image_mb: int = Field(
        default=50, ge=1, description="Largest image POST /api/runs/{id}/predict takes, in MiB."
    )
    max_model_mb: int = Field(
        default=200,
        ge=1,
        description="Largest model an external run uploads (PUT /api/runs/{id}/model), in MiB.",
    )
    metrics_cache_mb: int = Field(
        default=64, ge=1, description="Memory the API keeps for GET /metrics bodies, in MiB."
    )
    max_zip_entries: int = Field(default=200_000, ge=1)
    max_uncompressed_mb: int = Field(default=8192, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    # Redelivery of an unacknowledged task happens after this long; it must
    # exceed the longest queue wait plus training time (celery#5935).
    visibility_timeout_s: int = Field(default=7 * 24 * 3600, ge=60)
    stream_maxlen: int = Field(default=100_000, ge=100, description="Events kept per run stream.")
    worker_heartbeat_s: float = Field(default=5.0, gt=0)
    queue_resend_s: float = Field(
        default=60.0,
        gt=0,
        description="A run queued this long that no worker holds and whose message is not in "
        "the broker (lost between commit and send, Redis flushed) is sent again.",
    )
    max_delivery_deaths: int = Field(
        default=3,
        ge=1,
        description="Deliveries of a run in a row whose worker died (killed, out of memory) "
        "before the run is marked failed instead of queued again.",
    )
    worker_memory_mb: int | None = Field(
        default=None,
        ge=64,
        description="A worker's memory budget for training, in MiB (default: 80% of its "
        "cgroup limit, else of the machine's RAM). The API refuses a run whose estimate "
        "exceeds the largest live worker's budget.",
    )
    # Sizes of the gap probes' samples (TrainConfig.gap_probes): larger is
    # steadier and costs more time at each epoch end. 256 each keeps the
    # probes under 8% of an epoch of the question's training (6400 images,
    # 1600 validated; benchmarks/README.md); up to 512 a sample is one batch.
    probe_train_images: int = Field(
        default=256,
        ge=1,
        description="Training images evaluated like validation at each epoch end (gap probes).",
    )
    probe_bn_images: int = Field(
        default=256,
        ge=1,
        description="Training images that re-estimate BatchNorm statistics (gap probes).",
    )
    predict_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="How long POST /api/runs/{id}/predict waits for a predict worker's answer.",
    )
    probe_val_images: int = Field(
        default=256,
        ge=1,
        description="Validation images on which the BatchNorm lag is measured (gap probes); "
        "a smaller validation set is measured whole.",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("api_token")
    @classmethod
    def _no_placeholder(cls, value: str | None) -> str | None:
        if value is not None and value.strip() in {"", "changeme", "change-me", "secret"}:
            raise ValueError("CURVELAB_API_TOKEN is a placeholder; set a real secret or unset it")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(
                    f"CURVELAB_CORS_ORIGINS: {origin!r} is not an origin like https://example.org"
                )
        return value

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'curvelab.db'}"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def tmp_dir(self) -> Path:
        # Under the data dir so that the final rename of a staged dataset is
        # on one filesystem, hence atomic.
        return self.data_dir / "tmp"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_json_bytes(self) -> int:
        return self.max_json_kb * 1024

    @property
    def max_image_bytes(self) -> int:
        return self.max_image_mb * 1024 * 1024

    @property
    def max_model_bytes(self) -> int:
        return self.max_model_mb * 1024 * 1024

    @property
    def metrics_cache_bytes(self) -> int:
        return self.metrics_cache_mb * 1024 * 1024

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.datasets_dir, self.runs_dir, self.tmp_dir):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
