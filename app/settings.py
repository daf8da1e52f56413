"""The one Settings object, read from the environment (prefix FINETUNE_).

With nothing set, everything lives under one folder (`./.finetune`): a SQLite database, a filesystem
broker that needs no server, and the artifact store. The API, the worker and the CLI all read this.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINETUNE_", extra="ignore")

    home: Path = Field(default=Path(".finetune"), description="folder for the embedded default's data")
    database_url: str = Field(default="", description="SQLAlchemy URL; default sqlite under home")
    broker_url: str = Field(default="", description="Celery broker; default filesystem:// under home")
    artifacts: str = Field(default="", description="artifact store: a folder or s3://bucket/prefix")
    # S3-compatible endpoint (MinIO, ...) for an s3:// store; empty: boto3's own (AWS_ENDPOINT_URL or AWS).
    # Credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profile, role).
    s3_endpoint_url: str = Field(default="", description="S3 endpoint URL for an s3:// artifact store")

    # Filesystem broker polling: kombu's default of 1 s would add a second to every job's start.
    broker_polling_interval: float = Field(default=0.05, gt=0, le=10)
    # Redis redelivers an unacked message after this; set above the longest run (the lease makes it safe).
    broker_visibility_timeout: int = Field(default=7 * 24 * 3600, ge=60)

    lease_seconds: int = Field(default=60, ge=5, description="a running job's lease; heartbeats renew it")
    max_attempts: int = Field(default=3, ge=1, le=100)
    max_upload_bytes: int = Field(default=1 << 30, ge=1)
    max_runtime_seconds: int | None = Field(default=None, ge=1, description="server cap on a job's runtime")
    max_epochs: int = Field(default=10_000, ge=1)
    max_steps: int = Field(default=10_000_000, ge=1)
    max_running_jobs_per_owner: int | None = Field(default=None, ge=1)

    compile_cache_dir: str = Field(default="", description="torch.compile cache; default under home")
    allow_hub_downloads: bool = Field(default=False, description="let jobs fetch Hugging Face hub ids")
    metrics_flush_seconds: float = Field(default=1.0, gt=0, le=60)
    default_queue: str = "cpu"
    worker_queues: str = Field(default="cpu,gpu", description="queues a worker consumes, comma separated")
    # POST /jobs/{id}/predict runs here, on a worker of its own (serve starts one; compose's `predictor`),
    # so a prediction never waits behind a training run.
    predict_queue: str = Field(default="predict", description="queue of predictions (POST /jobs/{id}/predict)")
    prediction_timeout_seconds: int = Field(
        default=600, ge=10, description="a prediction no predictor answered in this long is failed (worker gone)"
    )
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        home = self.home.expanduser().resolve()
        self.home = home
        if not self.database_url:
            self.database_url = f"sqlite:///{home / 'finetune.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if not self.artifacts:
            self.artifacts = str(home / "artifacts")
        if not self.compile_cache_dir:
            self.compile_cache_dir = str(home / "compile-cache")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def broker_dir(self) -> Path:
        """Folders of the filesystem broker (used when broker_url is filesystem://)."""
        return self.home / "broker"

    @property
    def heartbeat_seconds(self) -> float:
        return max(1.0, self.lease_seconds / 4)

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
